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
S1_BREAKDOWN_TITLE = "S1 CPU breakdown (issue 14)"
"""A profile written by hand (py-spy), kept like the s1-cpu section."""
KEPT_SECTIONS = (S1_CPU_TITLE, S1_BREAKDOWN_TITLE)
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


def _find(systems: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((v for k, v in systems.items() if k.startswith(prefix)), None)


def _median(figures: dict[str, Any] | None, key: str) -> float | None:
    if figures is None or not figures[key].get("all"):
        return None
    return float(figures[key]["median"])


def _goals(systems: dict[str, Any]) -> str:
    """Issue 14's goals judged on the medians: 5x Go's writes/s, CPU per write <= etcd's."""
    now, before = _find(systems, "ours now"), _find(systems, "ours before")
    theirs, store = _find(systems, "Go"), _find(systems, "etcd")
    parts = []
    rate, go_rate = _median(now, "writes_per_second"), _median(theirs, "writes_per_second")
    if rate is not None and go_rate:
        ratio = round(rate / go_rate, 2)
        parts.append(f"S1 >= 5x Go: {ratio}x ({_verdict(ratio >= 5)})")
    mine, etcd = _median(now, "cpu_ms_per_write"), _median(store, "cpu_ms_per_write")
    if mine is not None and etcd is not None:
        parts.append(f"CPU per write <= etcd's: {mine} vs {etcd} ms ({_verdict(mine <= etcd)})")
    old = _median(before, "cpu_ms_per_write")
    if old is not None and mine is not None:
        parts.append(f"before -> now CPU per write {old} -> {mine} ms ({mine / old - 1:+.0%})")
    return "Goals, on the medians: " + "; ".join(parts) + "." if parts else ""


def s1_cpu_markdown(result: dict[str, Any]) -> str:
    """The "S1 CPU per write (issue 14)" section from ``python -m benchmarks s1-cpu``'s JSON."""
    load = " / ".join(str(x) for x in result["load_average_at_start"])
    commits, code = result["commits"], result["server_code"]
    command = f"python -m benchmarks s1-cpu --rounds {result['rounds']}"
    if "before" in commits:
        command = (
            f"git worktree add {result['before_tree']} {commits['before']}` and `{command} "
            f"--before {result['before_tree']}"
        )
    sides = [f"now: this checkout at `{commits['now']}`, server code as of `{code['now']}`"]
    if "before" in commits:
        sides.insert(0, f"before: `{commits['before']}` (server code as of `{code['before']}`)")
    lines = [
        f"## {S1_CPU_TITLE}",
        "",
        f"{result['date']}, {result['cores']} cores ({result['machine']}, Python "
        f"{result['python']}), load average at start {load}. Produced by `{command}`, all in "
        f"one run; every figure is in `results/s1_cpu.json`. Our cluster, {'; '.join(sides)}.",
        "",
        "Each round runs every system once, back to back, one at a time on fresh processes, "
        f"{result['connections']} connections, closed loop, {result['seconds']:g} s of new "
        "writes (ours and Go: new agents via POST /heartbeat, ENCRYPTION_KEY set for ours; "
        "etcd: 3 members on loopback, puts of new keys with 2 KB values through the JSON "
        "gateway); the order rotates by one each round. Server CPU per write: utime+stime "
        "from /proc summed over all of a system's server processes during the phase, divided "
        "by its acknowledged (2xx) writes; of it, ours in its cyclic garbage collector "
        "(the servers' `mcp_registry_gc_pause_seconds`). Median [min, max] over the rounds.",
        "",
        "The machine is shared with other processes while this runs (last column; the "
        "benchmark's own client and servers account for about 2 to 3 of it on 2 cores): "
        "writes/s move with that load, CPU per write much less, which is why it is the figure "
        "compared.",
        "",
        "| system | request | acknowledged writes/s | server CPU ms per write | of which GC "
        "| errors | non-2xx | client CPU s per round | 1-min load after each round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system, figures in result["systems"].items():
        lines.append(
            f"| {system} | {figures['request']} | {_spread(figures['writes_per_second'])} "
            f"| {_spread(figures['cpu_ms_per_write'])} "
            f"| {_spread(figures.get('gc_ms_per_write', {}))} | {figures['errors']} "
            f"| {figures['non_2xx']} | {_cell(figures['client_cpu_seconds'])} "
            f"| {_cell(figures.get('load_average_after'))} |"
        )
    if goals := _goals(result["systems"]):
        lines += ["", goals]
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
