"""Writes a run's results: ``results/latest.json`` (everything) and ``RESULTS.md`` (tables).

The markdown is generated only from the JSON, so the two never disagree.
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
    ("peak_rss_mib", "peak RSS MiB per node"),
    ("client_cpu_seconds", "client CPU s"),
)


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


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


def write(report: dict[str, Any], out: Path) -> Path:
    """Write both files under ``out``; returns the markdown's path."""
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    path = out / "RESULTS.md"
    path.write_text(markdown(report))
    return path
