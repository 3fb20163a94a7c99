"""benchmarks/cpu.py (server CPU per write from /proc), S1 on a real 3-node etcd, and the
report keeping the repeated S1 CPU section across runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cpu, etcd, report
from benchmarks.scenarios import Scale, s1_measure
from tests.timing import scaled

BURN = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.3: pass\n"
    "sys.stdin.read()\n"
)


def test_meter_counts_a_live_descendant_and_a_reaped_one() -> None:
    # A parent that starts a CPU-burning child and waits for it: the meter watches the parent
    # only, so the child's CPU must be found through the process tree while it lives.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN!r}])",
        ],
        stdin=subprocess.PIPE,
    )
    meter = cpu.Meter([parent.pid])
    meter.mark()
    try:
        deadline = time.monotonic() + scaled(20)
        while meter.seconds() < 0.3:
            assert time.monotonic() < deadline, "the child's CPU never showed"
            time.sleep(0.05)
        assert len(cpu.tree([parent.pid])) == 2
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=scaled(20))
    # Once exited and reaped, a child's CPU is in its parent's cutime/cstime.
    this = cpu.Meter([os.getpid()])
    this.mark()
    subprocess.run([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL, check=True)
    assert this.seconds() >= 0.3


def test_meter_counts_only_the_part_after_the_mark_of_a_descendant_reaped_during_it() -> None:
    # The child burns CPU before the mark and a little after it, then exits; its parent, the
    # watched process, reaps it and stays. The parent's cutime then holds the child's whole
    # life, and only what came after the mark is this phase's.
    child = (
        "import sys, time\n"
        "def burn(s):\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < s: pass\n"
        "burn(0.6)\n"
        "print('marked?', flush=True)\n"
        "sys.stdin.readline()\n"
        "burn(0.1)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {child!r}])\n"
            "print('reaped', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.stdout.readline() == "marked?\n"
        meter = cpu.Meter([parent.pid])
        meter.mark()
        assert len(cpu.tree([parent.pid])) == 2
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "reaped\n"
        assert len(cpu.tree([parent.pid])) == 1
        # The 0.1 s after the mark, in clock ticks (10 ms): not the 0.6 s before it.
        assert 0.05 <= meter.seconds() < 0.4
    finally:
        parent.stdin.close()
        parent.wait(timeout=scaled(20))


def test_per_write_counts_only_acknowledged_writes() -> None:
    assert cpu.acknowledged({"200": 90, "201": 5, "503": 5}) == 95
    assert cpu.per_write(0.19, 95, 2.0) == {
        "server_cpu_seconds_total": 0.19,
        "acknowledged_writes": 95,
        "writes_per_second": 47.5,
        "cpu_ms_per_write": 2.0,
    }
    assert cpu.per_write(1.0, 0, 2.0)["cpu_ms_per_write"] is None


def _s1_cpu_result(median: float) -> dict[str, Any]:
    spread = {"median": median, "min": median, "max": median, "all": [median]}
    return {
        **report.header("full"),
        "commits": {"before": "aaaaaaa", "now": "bbbbbbb"},
        "server_code": {"before": "aaaaaa0", "now": "bbbbbb0"},
        "before_tree": "/tmp/before",
        "rounds": 1,
        "seconds": 20.0,
        "connections": 16,
        "systems": {
            "etcd 3.4.23": {
                "request": "PUT",
                "writes_per_second": spread,
                "cpu_ms_per_write": spread,
                "errors": 0,
                "non_2xx": 0,
                "client_cpu_seconds": [1.0],
            }
        },
        "runs": {},
        "skipped": ["Go"],
    }


def test_the_s1_cpu_section_is_replaced_in_place_and_kept_by_a_full_run(tmp_path: Path) -> None:
    full = {**report.header("full"), "results": {}}
    report.write(full, tmp_path)
    report.write_s1_cpu(_s1_cpu_result(0.9513), tmp_path)
    report.write_s1_cpu(_s1_cpu_result(0.97), tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count(f"## {report.S1_CPU_TITLE}") == 1
    # The header carries live figures (the load average can be 0.95), so
    # the first write is looked for by its table cell, which no header has.
    assert "0.97 [0.97, 0.97]" in text and "0.9513 [0.9513" not in text
    assert text.startswith("# Benchmark results")
    path = tmp_path / "RESULTS.md"
    path.write_text(path.read_text() + f"\n## {report.S1_BREAKDOWN_TITLE}\n\nby hand\n")
    report.write(full, tmp_path)
    kept = path.read_text()
    assert kept.count(f"## {report.S1_CPU_TITLE}") == 1 and "0.97 [0.97, 0.97]" in kept
    assert kept.count(f"## {report.S1_BREAKDOWN_TITLE}") == 1 and "by hand" in kept


@pytest.mark.slow
def test_s1_on_a_three_node_etcd(tmp_path: Path) -> None:
    binary, why = etcd.find_etcd()
    if binary is None:
        pytest.skip(why)
    scale = Scale(seconds=1.0, connections=4)

    async def measure() -> tuple[dict[str, Any], list[int], list[str]]:
        with etcd.cluster() as system:
            assert system is not None
            await system.wait_ready(limit=scaled(30))
            row = await s1_measure(system, scale)
            return row, system.pids, system.urls

    row, pids, urls = asyncio.run(measure())
    assert len(pids) == 3 and all(url.startswith("http://127.0.0.1:") for url in urls)
    assert row["system"].startswith("etcd 3.4.") and row["errors"] == 0
    assert row["requests"] > 0 and row["acknowledged_writes"] == row["requests"]
    assert row["cpu_ms_per_write"] > 0 and len(row["cpu_seconds"]) == 3
    assert "gc_ms_per_write" not in row  # ours only: read from our servers' metrics
    for pid in pids:  # every member stopped
        assert not Path(f"/proc/{pid}").exists()
