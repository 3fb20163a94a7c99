"""Check a finished run directory: every checker's verdict into ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jepsen_like import checkers
from jepsen_like.history import operations, read_events
from jepsen_like.report import write_report

SECOND = 1_000_000_000


def check_run(run_dir: Path, timeout_s: float = 10, grace_s: float = 4) -> dict[str, Any]:
    ops = operations(read_events(run_dir / "history.jsonl"))
    final = json.loads((run_dir / "final.json").read_text())
    faults_path = run_dir / "faults.json"
    faults = json.loads(faults_path.read_text()) if faults_path.exists() else []
    values: dict[str, Any] = final["values"]
    verdicts = {
        "lost_writes": checkers.lost_writes(ops, values),
        "linearizable": checkers.linearizable(ops, final=values),
        "converged": checkers.converged(final["digests"]),
        "availability": checkers.availability(ops, faults),
        "health": checkers.health(ops, int(timeout_s * SECOND), int(grace_s * SECOND)),
    }
    results = {
        "valid": all(v["valid"] is True for v in verdicts.values()),
        "operations": len(ops),
        "faults": len(faults),
        **verdicts,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(run_dir / "report.html", ops, faults, results)
    return results
