"""Writes a run's results: ``results/latest.json`` (everything) and ``RESULTS.md`` (tables).

The markdown is generated only from the JSON, so the two never disagree. The repeated S1 CPU
measurement (``python -m benchmarks s1-cpu``) has its own JSON (``results/s1_cpu.json``) and
its own section of RESULTS.md; a full run keeps that section, and it keeps the rest.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = (
    ("system", "system"),
    ("request", "request"),
    ("per_second", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("errors", "errors"),
    ("late_sends", "late sends"),
    ("cpu_seconds", "server CPU s per node"),
    ("writes_per_second", "acknowledged writes/s"),
    ("cpu_ms_per_write", "server CPU ms per write"),
    ("peak_rss_mib", "peak RSS MiB per node"),
    ("client_cpu_seconds", "client CPU s"),
)


S1_CPU_TITLE = "S1 CPU per write (issue 14)"
KEPT_SECTIONS = (S1_CPU_TITLE,)
"""Sections of RESULTS.md written by other commands, carried over when a full run rewrites it."""


SERVER_CODE = ("registry", "replication", "pyproject.toml")


def commit_of(tree: Path, paths: tuple[str, ...] = ()) -> str:
    """The short commit checked out in ``tree``, or with ``paths`` the last one that changed
    them ("unknown" outside git)."""
    command = ["git", "log", "-1", "--format=%h", "HEAD", "--", *(f":/{p}" for p in paths)]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _commit() -> str:
    return commit_of(HERE)


def header(scale: str) -> dict[str, Any]:
    """Where and when the figures were taken; the load average shows a busy machine."""
    return {
        "commit": _commit(),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "scale": scale,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " / ".join(_cell(v) for v in value)
    return str(value)


def _verdict(met: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "n/a"}[met]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Commit `{report['commit']}`, {report['cores']} cores ({report['machine']}, Python "
        f"{report['python']}), {report['date']}, scale: {report['scale']}, load average at "
        f"start {_cell(report['load_average_at_start'])}. Produced by `make bench` "
        "(`python -m benchmarks run --scenario all`); every figure is in `results/latest.json`.",
        "",
        "Ours: 3 replicas on loopback, Raft, ENCRYPTION_KEY set, every write fsynced on a "
        "majority. Go: the npm package's `mcp-mesh-registry`, one node on SQLite. One load "
        "generator (asyncio, pure Python: aiohttp, and a minimal keep-alive client for S2's "
        "HEADs) for both, on the same cores as the servers: its own "
        "CPU time is the last column, and a client near one core per second of load is itself "
        "the limit. Server CPU seconds and peak RSS are per node (/proc).",
        "",
        "| scenario | target | measured | result |",
        "|---|---|---|---|",
    ]
    results = report["results"]
    for result in results.values():
        lines.append(
            f"| {result['name']} | {result['target']} | {result['measured']} "
            f"| {_verdict(result['met'])} |"
        )
    for result in results.values():
        lines += ["", f"## {result['name']}", ""] if lines[-1] else [f"## {result['name']}", ""]
        if result["rows"]:
            lines.append("| " + " | ".join(title for _, title in COLUMNS) + " |")
            lines.append("|" + "---|" * len(COLUMNS))
            for row in result["rows"]:
                lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
            lines.append("")
        for note in result["notes"]:
            lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def _sections(text: str) -> dict[str, str]:
    """RESULTS.md's ``## `` sections by title, each with its heading, up to the next one."""
    found: dict[str, str] = {}
    title = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            title = line[3:].strip()
            found[title] = ""
        if title is not None:
            found[title] += line
    return found


def write(report: dict[str, Any], out: Path) -> Path:
    """Write both files under ``out``; returns the markdown's path."""
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    path = out / "RESULTS.md"
    text = markdown(report)
    if path.exists():
        kept = _sections(path.read_text())
        for title in KEPT_SECTIONS:
            if title in kept:
                text += "\n" + kept[title].rstrip() + "\n"
    path.write_text(text)
    return path


def _spread(figures: dict[str, Any]) -> str:
    if not figures.get("all"):
        return "n/a"
    return f"{figures['median']} [{figures['min']}, {figures['max']}]"


def s1_cpu_markdown(result: dict[str, Any]) -> str:
    """The "S1 CPU per write (issue 14)" section from ``python -m benchmarks s1-cpu``'s JSON."""
    load = " / ".join(str(x) for x in result["load_average_at_start"])
    lines = [
        f"## {S1_CPU_TITLE}",
        "",
        f"{result['date']}, {result['cores']} cores ({result['machine']}, Python "
        f"{result['python']}), load average at start {load}. Produced by `python -m benchmarks "
        f"s1-cpu --rounds {result['rounds']}"
        + (
            f" --before <worktree of {result['commits']['before']}>`"
            if "before" in result["commits"]
            else "`"
        )
        + f" on commit `{result['commits']['now']}`; every figure is in "
        "`results/s1_cpu.json`. Rows name the commit each cluster's server code is from: "
        + ", ".join(
            f"{side} `{commit}` (server code last changed in `{result['server_code'][side]}`)"
            for side, commit in result["commits"].items()
        )
        + ".",
        "",
        f"Each round runs every system once, one at a time on fresh processes, "
        f"{result['connections']} connections, closed loop, {result['seconds']:g} s, new writes "
        "only; the order rotates by one each round. Server CPU per write: utime+stime from "
        "/proc summed over all of a system's server processes during the phase, divided by "
        "its acknowledged (2xx) writes. Median [min, max] over the rounds.",
        "",
        "| system | request | acknowledged writes/s | server CPU ms per write | errors | non-2xx "
        "| client CPU s per round | 1-min load after each round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, figures in result["systems"].items():
        lines.append(
            f"| {system} | {figures['request']} | {_spread(figures['writes_per_second'])} "
            f"| {_spread(figures['cpu_ms_per_write'])} | {figures['errors']} "
            f"| {figures['non_2xx']} | {_cell(figures['client_cpu_seconds'])} "
            f"| {_cell(figures.get('load_average_after'))} |"
        )
    if result["skipped"]:
        lines += ["", f"Skipped (reason printed by the run): {', '.join(result['skipped'])}."]
    return "\n".join(lines) + "\n"


def write_s1_cpu(result: dict[str, Any], out: Path) -> Path:
    """``results/s1_cpu.json`` and the S1 CPU section of RESULTS.md (replaced or appended;
    every other section is left as it is). Returns the markdown's path."""
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "s1_cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    path = out / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = s1_cpu_markdown(result)
    old = _sections(text).get(S1_CPU_TITLE)
    if old is not None:
        text = text.replace(old, section + "\n")
        text = text.rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    return path
