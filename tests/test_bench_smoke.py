"""The benchmark driver end to end at smoke scale (seconds): CI checks that it works, not the
figures (those live in benchmarks/RESULTS.md, measured at full scale)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import postgres
from tests.timing import scaled

pytestmark = pytest.mark.slow


def test_every_scenario_runs_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--scenario",
            "all",
            "--smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),  # ~30 s on a quiet 2-core machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "latest.json").read_text())
    results = report["results"]
    assert list(results) == ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]
    for result in results.values():
        assert {"name", "target", "measured", "met", "rows", "notes"} <= set(result)
    ours = results["s1"]["rows"][0]
    assert ours["system"] == "ours" and ours["requests"] > 0 and ours["errors"] == 0
    assert set(ours["statuses"]) == {"200"}
    assert len(ours["cpu_seconds"]) == 3 and all(c > 0 for c in ours["cpu_seconds"])
    assert ours["acknowledged_writes"] == ours["requests"] and ours["cpu_ms_per_write"] > 0
    assert 0 <= ours["gc_ms_per_write"] < ours["cpu_ms_per_write"]  # from the servers' metrics
    assert results["s2"]["ours"]["false_unhealthy"] == 0
    # Settled, a steady mesh appends nothing: unchanged heartbeats are answered from the view.
    assert isinstance(results["s2"]["ours"]["settle"]["audit_recorded"], int)
    assert results["s2"]["ours"]["log_growth_per_second"] < 0.1
    head = results["s2"]["rows"][0]
    assert head["request"].startswith("HEAD") and head["errors"] == 0
    listing = results["s3"]["rows"][0]
    assert listing["system"] == "ours" and listing["statuses"] == {"200": listing["requests"]}
    assert len(results["s4"]["first_write_s"]) == 2
    assert results["s5"]["met"] is True
    assert len(results["s6"]["peak_rss_mib"]) == 3
    pg_rows = results["s7"]["rows"]  # PostgreSQL mode: writes then listings, ours first
    if (postgres.BIN / "initdb").exists():
        assert [row["system"] for row in pg_rows][:2] == ["ours on PostgreSQL"] * 2
        assert pg_rows[0]["acknowledged_writes"] == pg_rows[0]["requests"] > 0
        assert len(pg_rows[0]["cpu_seconds"]) == 4  # three replicas and the database server
    else:
        assert not pg_rows and "no PostgreSQL server binaries" in results["s7"]["notes"][0]
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert markdown.startswith("# Benchmark results")
    assert all(f"## {result['name']}" in markdown for result in results.values())


def test_unknown_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--scenario", "s9", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("unknown scenario(s): s9")


def test_ours_from_a_path_that_is_no_source_tree_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--scenario",
            "s1",
            "--ours",
            f"old={tmp_path}",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 2
    assert "want NAME=PATH of a source tree" in done.stderr
