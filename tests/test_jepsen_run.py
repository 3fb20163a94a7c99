"""A short real chaos run: three replicas in network namespaces under every nemesis, with at
least one pair of faults active at once. Valid only with evidence: acknowledged writes,
deletes and linearizable reads (failed or unknown operations are not activity), an ok
fraction above the floor, every scheduled fault and overlap carried out, and the MeshJob
workload's jobs created, completed and reclaimed with every job checker valid. Once for each
topology: the Raft StatefulSet, and stateless replicas sharing a PostgreSQL server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jepsen_like.history import WRITE_APIS
from jepsen_like.hosts import available
from jepsen_like.nemesis import KINDS
from jepsen_like.pg_nemesis import PG_KINDS
from jepsen_like.pg_server import available as postgres_available
from tests.timing import scaled

pytestmark = pytest.mark.slow

PROBLEM = available()
TIME_LIMIT = 30


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
            str(TIME_LIMIT),
            "--seed",
            "11",
            "--nemesis",
            "all",
            "--overlaps",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1, result.stderr[-3000:]
    results = json.loads((runs[0] / "results.json").read_text())
    evidence = results["evidence"]
    assert evidence["valid"] is True, evidence["reasons"]
    required, observed = evidence["required"], evidence["observed"]
    # The minima are the defaults scaled to the run, not zero; activity is ok operations only.
    for name in ("ok_writes", "ok_deletes", "ok_reads"):
        assert required[name] >= 2 * TIME_LIMIT, required
        assert observed[name] >= required[name], observed
    assert all(observed["ok_writes_by_api"][api] > 0 for api in WRITE_APIS), observed
    assert set(observed["faults_by_kind"]) == set(KINDS), observed
    assert observed["faults"] >= required["faults"] >= len(KINDS)
    assert observed["overlaps"] >= required["overlaps"] >= 1
    # The job workload ran: jobs created and completed, leases expired and jobs reclaimed,
    # stale owners fenced off, claims raced through two replicas; and its checkers held.
    jobs = results["job_evidence"]
    assert jobs["configured"] is True and jobs["valid"] is True, jobs["reasons"]
    for name, need in jobs["required"].items():
        assert jobs["observed"][name] >= need >= 1, (name, jobs["observed"])
    for name in ("lost_jobs", "overlapping_claims", "completed_results", "terminal_stays"):
        assert results[name]["valid"] is True, results[name]
    assert results["lost_jobs"]["jobs"] >= jobs["required"]["ok_creates"]
    assert results["completed_results"]["checked"] >= jobs["required"]["completions"]
    # The stranger knocked on every RAFT_PORT and got nowhere.
    assert results["strangers"]["visits"] >= 1 and results["strangers"]["valid"] is True
    # The StatefulSet went 3 -> 5 -> 3 and every scale-down held.
    assert results["membership"]["visits"] >= 1 and results["membership"]["valid"] is True
    assert results["valid"] is True, json.dumps(results, indent=1)[:4000]
    assert result.returncode == 0
    assert (runs[0] / "report.html").read_text().startswith("<!doctype html>")
    # Everything the run created on the machine is gone (another run may be going on).
    assert harness_namespaces() <= before


@pytest.mark.skipif(PROBLEM is not None, reason=f"chaos harness unavailable: {PROBLEM}")
def test_power_lost_on_the_leader_and_the_new_members_loses_nothing(tmp_path: Path) -> None:
    """``membership`` alone with seed 2, whose first fault is the ``power-joiners`` shape: the
    leader and both new members (their disks on lazyfs) commit alone while the other two old
    members are cut off, then lose power. Registrations were acknowledged in that window (or
    the shape reached nothing), and every checker holds afterwards."""
    before = harness_namespaces()
    run, results, first = _membership_only_run(tmp_path, seed=2)
    assert first["shape"] == "power-joiners" and {3, 4} <= set(first["power_joiners_nodes"])
    assert len(first["isolated"]) == 2 and first["back_ready"] and first["lost"] == []
    assert first["elected_before_leader_back"] is not None  # four of five elected a leader
    assert "unreached" not in first and _acknowledged_within(run, first["alone_ns"]) >= 5
    assert (run / "disk-3.undo").exists()  # the new members' disks were on lazyfs
    assert results["valid"] is True, json.dumps(results, indent=1)[:4000]
    assert harness_namespaces() <= before


@pytest.mark.skipif(PROBLEM is not None, reason=f"chaos harness unavailable: {PROBLEM}")
def test_a_removal_stalled_by_a_power_loss_leaves_one_membership(tmp_path: Path) -> None:
    """``membership`` alone with seed 1, whose first fault is the ``stalled-remove`` shape: the
    removal sent while it cannot commit, then the leader and another old member lose power
    with it uncommitted in their journals. It is not acknowledged, the retry settles it, and
    every old member ends up listing the old three (checker ``membership``)."""
    before = harness_namespaces()
    _, results, first = _membership_only_run(tmp_path, seed=1)
    assert first["shape"] == "stalled-remove" and len(first["stalled_nodes"]) == 2
    assert len(first["stalled_paused"]) == 2 and first["stalled_answer"] != 200
    assert first["removed_4"] in (200, 404) and first["lost"] == []
    assert results["membership"]["valid"] is True
    assert results["valid"] is True, json.dumps(results, indent=1)[:4000]
    assert harness_namespaces() <= before


def _membership_only_run(tmp_path: Path, seed: int) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A 20 s run of ``membership`` alone, one fault at a time: its directory, its results and
    the detail of its first fault (the shape the seed draws first)."""
    command = [
        sys.executable, "-m", "jepsen_like", "run", "--time-limit", "20", "--seed", str(seed),
        "--nemesis", "membership", "--overlaps", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=scaled(180))
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1, result.stderr[-3000:]
    results = json.loads((runs[0] / "results.json").read_text())
    first = json.loads((runs[0] / "faults.json").read_text())["faults"][0]["detail"]
    return runs[0], results, first


def _acknowledged_within(run: Path, window: list[int]) -> int:
    """Registrations (every write API) and job creations both sent and acknowledged inside
    ``window``: each a committed entry, committed while only the leader and the new members
    ran. (Heartbeats are answered from the local view, and a delete or claim may change
    nothing, so neither counts.)"""
    sent: dict[int, dict[str, Any]] = {}
    count = 0
    for line in (run / "history.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op["type"] == "invoke":
            sent[op["process"]] = op
            continue
        invoke = sent.get(op["process"])
        if op["type"] != "ok" or invoke is None or op["f"] not in ("write", "job-create"):
            continue
        count += window[0] <= invoke["time"] and op["time"] <= window[1]
    return count


PG_PROBLEM = PROBLEM or postgres_available()
PG_TIME_LIMIT = 20
"""The first round of a schedule always runs whole: seven kinds take about 45 s, so the run
lasts about 50 s whatever the limit; the limit only scales the evidence owed."""


@pytest.mark.skipif(PG_PROBLEM is not None, reason=f"chaos harness unavailable: {PG_PROBLEM}")
def test_short_postgresql_chaos_run_is_valid(tmp_path: Path) -> None:
    """``--topology postgresql``: the database killed (crash recovery) and paused, a replica
    cut off from it and from the clients, replicas killed and paused, the decider killed and
    succeeded by another with a higher term; every checker valid."""
    before = harness_namespaces()
    command = [
        sys.executable, "-m", "jepsen_like", "run", "--topology", "postgresql",
        "--time-limit", str(PG_TIME_LIMIT), "--seed", "11", "--nemesis", "all",
        "--overlaps", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=scaled(240),
    )
    runs = list(tmp_path.glob("run-*"))
    assert len(runs) == 1, result.stderr[-3000:]
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["topology"] == "postgresql"
    evidence = results["evidence"]
    assert evidence["valid"] is True, evidence["reasons"]
    required, observed = evidence["required"], evidence["observed"]
    for name in ("ok_writes", "ok_deletes", "ok_reads"):
        assert required[name] >= 2 * PG_TIME_LIMIT, required
        assert observed[name] >= required[name], observed
    assert all(observed["ok_writes_by_api"][api] > 0 for api in WRITE_APIS), observed
    assert set(observed["faults_by_kind"]) == set(PG_KINDS), observed
    assert observed["faults"] >= required["faults"] >= len(PG_KINDS)
    assert observed["overlaps"] >= required["overlaps"] >= 1
    assert observed["decider_takeovers"] >= required["decider_takeovers"] >= 1
    jobs = results["job_evidence"]
    assert jobs["configured"] is True and jobs["valid"] is True, jobs["reasons"]
    for name, need in jobs["required"].items():
        assert jobs["observed"][name] >= need >= 1, (name, jobs["observed"])
    faults = json.loads((runs[0] / "faults.json").read_text())["faults"]
    assert results["self_stops"]["stops"] == []  # no replica stopped itself (seed 18001's bug)
    crash = next(f for f in faults if f["name"] == "pg-kill")
    assert crash["detail"]["pids"] >= 2 and crash["detail"]["recovery_s"] > 0  # and backends
    assert results["valid"] is True, json.dumps(results, indent=1)[:4000]
    assert result.returncode == 0
    # The server's data directory is kept in the run directory, like the Raft PVCs.
    assert (runs[0] / "pg" / "data" / "PG_VERSION").exists()
    assert "database system was interrupted" in (runs[0] / "pg" / "server.log").read_text()
    assert harness_namespaces() <= before


def harness_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("jl")}
