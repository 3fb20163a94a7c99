"""Check a finished run directory: every checker's verdict into ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jepsen_like import checkers, job_checkers
from jepsen_like.history import JOB_FUNCTIONS, operations, read_events
from jepsen_like.report import write_report

SECOND = 1_000_000_000


def check_run(
    run_dir: Path,
    timeout_s: float = 10,
    grace_s: float = 4,
    thresholds: checkers.Thresholds = checkers.DEFAULT_THRESHOLDS,
    job_thresholds: job_checkers.JobThresholds = job_checkers.DEFAULT_JOB_THRESHOLDS,
) -> dict[str, Any]:
    """Judge ``run_dir``. A missing ``faults.json`` (the schedule and the faults carried out)
    or ``workload.json`` (the time limit) leaves the run without evidence: invalid. The job
    workload's evidence is owed when ``workload.json`` configured producers; runs from before
    the job workload have no job operations, and their job verdicts are valid and empty."""
    ops = operations(read_events(run_dir / "history.jsonl"))
    final = json.loads((run_dir / "final.json").read_text())
    record = _optional_json(run_dir / "faults.json")
    scheduled = record.get("scheduled") if isinstance(record, dict) else None
    faults = record.get("faults") if isinstance(record, dict) else None
    workload = _optional_json(run_dir / "workload.json")
    run_s = workload.get("time_limit") if isinstance(workload, dict) else None
    topology = workload.get("topology", "raft") if isinstance(workload, dict) else "raft"
    values: dict[str, Any] = final["values"]
    # Agents' operations for the register checkers; job operations (keyed by job token) for
    # the job checkers. Liveness (health, and a claim's owner) is in the agents' operations.
    agent_ops = [op for op in ops if op.f not in JOB_FUNCTIONS]
    final_jobs = final.get("jobs", {})
    timeout, grace = int(timeout_s * SECOND), int(grace_s * SECOND)
    configured = isinstance(workload, dict) and workload.get("producer_pairs", 0) > 0
    verdicts = {
        "lost_writes": checkers.lost_writes(agent_ops, values),
        "linearizable": checkers.linearizable(agent_ops, final=values),
        "converged": checkers.converged(final["digests"]),
        "availability": checkers.availability(ops, faults or []),
        "strangers": checkers.strangers(faults or []),
        "membership": checkers.membership(faults or []),
        "self_stops": checkers.self_stops(_replica_logs(run_dir), topology == "postgresql"),
        "health": checkers.health(agent_ops, timeout, grace),
        "evidence": checkers.evidence(agent_ops, run_s, scheduled, faults, thresholds, topology),
        "lost_jobs": job_checkers.lost_jobs(ops, final_jobs),
        "overlapping_claims": job_checkers.overlapping_claims(ops, timeout, grace),
        "completed_results": job_checkers.completed_results(ops, final_jobs),
        "terminal_stays": job_checkers.terminal_stays(ops, final_jobs),
        "job_evidence": job_checkers.job_evidence(ops, run_s, configured, job_thresholds),
    }
    results = {
        "valid": all(v["valid"] is True for v in verdicts.values()),
        "topology": topology,
        "operations": len(ops),
        "faults": len(faults or []),
        **verdicts,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(run_dir / "report.html", ops, faults or [], results)
    return results


def _replica_logs(run_dir: Path) -> dict[str, str]:
    """Every replica's log (``n<i>.log``), by name."""
    return {p.stem: p.read_text(errors="replace") for p in sorted(run_dir.glob("n*.log"))}


def _optional_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None
