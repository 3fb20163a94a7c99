"""``python -m benchmarks run --scenario all``: issue 7's scenarios, ours against the Go registry.

Writes ``benchmarks/results/latest.json`` and ``benchmarks/RESULTS.md`` (or into ``--out``).
``--smoke`` shrinks everything to seconds (what CI runs); the published table is full scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import scenarios
from benchmarks.scenarios import Result, Scale

HERE = Path(__file__).resolve().parent
SCENARIOS: dict[str, Callable[[Scale], Result]] = {
    "s1": lambda scale: asyncio.run(scenarios.s1_registration(scale)),
    "s2": lambda scale: asyncio.run(scenarios.s2_heartbeats(scale)),
    "s3": lambda scale: asyncio.run(scenarios.s3_discovery(scale)),
    "s4": lambda scale: asyncio.run(scenarios.s4_failover(scale)),
    "s5": scenarios.s5_recovery,
}


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, list):
        return " / ".join(_fmt(v) for v in value)
    return str(value)


def _side(label: str, figures: dict[str, Any] | None) -> str:
    if figures is None:
        return f"| {label} | n/a | | | | |"
    return (
        f"| {label} | {figures['per_second']} | {figures['p50_ms']} | {figures['p99_ms']} "
        f"| {_fmt(figures.get('cpu_seconds'))} | {_fmt(figures.get('peak_rss_mib'))} |"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Commit `{report['commit']}`, {report['cores']} cores ({report['machine']}), "
        f"{report['date']}, scale: {report['scale']}. Produced by `make bench` "
        "(`python -m benchmarks run --scenario all`); raw figures in `results/latest.json`.",
        "Ours: 3 replicas on loopback, Raft, ENCRYPTION_KEY set, every write fsynced on a "
        "majority. Go: the npm package's `mcp-mesh-registry`, one node on SQLite. Same load "
        "generator (aiohttp, on the same cores) for both. CPU seconds and peak RSS are per node.",
        "",
    ]
    header = "| system | req/s | p50 ms | p99 ms | CPU s per node | peak RSS MiB per node |"
    rule = "|---|---|---|---|---|---|"
    results = report["results"]
    if "s1" in results:
        r = results["s1"]
        lines += [f"## {r['name']}", "", f"{r['connections']} connections.", "", header, rule]
        lines += [_side("ours", r["ours"]), _side("Go", r["go"]), ""]
        lines += [f"Ratio {_fmt(r['ratio'])} (target {r['target_ratio']}x): {_fmt(r['met'])}", ""]
    if "s2" in results:
        r = results["s2"]
        lines += [
            f"## {r['name']}",
            "",
            "| | req/s | p50 ms | p99 ms | late sends |",
            "|---|---|---|---|---|",
        ]
        for kind in ("head", "post"):
            f = r[kind]
            lines.append(
                f"| {kind.upper()} | {f['per_second']} | {f['p50_ms']} | {f['p99_ms']} "
                f"| {f['late_sends']} |"
            )
        lines += [
            "",
            f"False unhealthy: {r['false_unhealthy']}; Raft log growth {r['log_growth_per_second']}"
            f" entries/s; CPU s per node {_fmt(r['cpu_seconds'])}. Target ({r['target']}): "
            f"{_fmt(r['met'])}.",
            "",
            f"## S6 memory with {r['name'].split('(')[1].split()[0]} agents",
            "",
            f"Peak RSS per node {_fmt(r['s6_peak_rss_mib'])} MiB (target < 256 MiB): "
            f"{_fmt(r['s6_met'])}.",
            "",
        ]
    if "s3" in results:
        r = results["s3"]
        lines += [f"## {r['name']}", "", header, rule]
        lines += [
            _side("ours GET /agents", r["ours_agents"]),
            _side("ours GET /api/v1/agents", r["ours_api_v1_agents"]),
            _side("Go GET /agents", r["go_agents"]),
            "",
            f"Ratio (GET /agents) {_fmt(r['ratio'])} (target {r['target_ratio']}x): "
            f"{_fmt(r['met'])}",
            "",
        ]
    for key in ("s4", "s5"):
        if key in results:
            r = results[key]
            lines += [
                f"## {r['name']}",
                "",
                f"Trials (s): {_fmt(r['trials_s'])}; median {r['median_s']} s "
                f"(target {r['target']}): {_fmt(r['met'])}.",
                "",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run scenarios and write the results")
    run.add_argument("--scenario", default="all", help="all, or a comma list of s1..s5")
    run.add_argument("--smoke", action="store_true", help="seconds-long version (CI)")
    run.add_argument("--out", type=Path, default=HERE, help="where results go")
    args = parser.parse_args(argv)
    chosen = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        print(
            f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    scale = Scale.smoke() if args.smoke else Scale()
    results: dict[str, Result] = {}
    for name in chosen:
        started = time.monotonic()
        print(f"{name}: running", flush=True)
        results[name] = SCENARIOS[name](scale)
        print(f"{name}: done in {time.monotonic() - started:.0f}s", flush=True)
    report = {
        "commit": _commit(),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
        "scale": "smoke" if args.smoke else "full",
        "results": results,
    }
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    (args.out / "results" / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "RESULTS.md").write_text(markdown(report) + "\n")
    print((args.out / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
