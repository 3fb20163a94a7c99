"""A short real chaos run: three replicas in network namespaces, partitions, kills, pauses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jepsen_like.hosts import available

pytestmark = pytest.mark.slow

PROBLEM = available()


@pytest.mark.skipif(PROBLEM is not None, reason=f"chaos harness unavailable: {PROBLEM}")
def test_short_chaos_run_is_valid(tmp_path: Path) -> None:
    before = harness_namespaces()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepsen_like",
            "run",
            "--time-limit",
            "30",
            "--seed",
            "11",
            "--nemesis",
            "partition,kill,pause,wipe",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1, result.stderr[-3000:]
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["operations"] > 200
    assert results["faults"] >= 2
    assert results["valid"] is True, json.dumps(results, indent=1)[:4000]
    assert result.returncode == 0
    assert (runs[0] / "report.html").read_text().startswith("<!doctype html>")
    # Everything the run created on the machine is gone (another run may be going on).
    assert harness_namespaces() <= before


def harness_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("jl")}
