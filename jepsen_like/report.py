"""An HTML report: verdicts, a timeline of operations by outcome with fault windows shaded,
and latencies over time. Plain inline SVG, so the file opens anywhere with no assets."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from jepsen_like.history import (
    FAIL,
    INFO,
    JOB_BATCH,
    JOB_CANCEL,
    JOB_CLAIM,
    JOB_CREATE,
    JOB_READ,
    OK,
    Op,
)

COLORS = {OK: "#2a9d4b", FAIL: "#d1495b", INFO: "#edae49"}
ROWS = {
    "write": 0,
    "delete": 1,
    "read": 2,
    "heartbeat": 3,
    JOB_CREATE: 4,
    JOB_CLAIM: 5,
    JOB_BATCH: 6,
    JOB_CANCEL: 7,
    JOB_READ: 7,
}
LABELS = (
    "write",
    "delete",
    "read",
    "heartbeat",
    "job create",
    "job claim",
    "job batch",
    "job cancel/read",
)
"""The timeline's rows, top to bottom (``ROWS`` places each function in one)."""
WIDTH, ROW, LAT = 1000, 30, 160


def _svg_timeline(ops: list[Op], faults: list[dict[str, Any]], t0: int, span: int) -> str:
    def x(t: int) -> float:
        return (t - t0) / span * WIDTH

    parts = [f'<svg width="{WIDTH}" height="{ROW * len(LABELS) + 20}">']
    for fault in faults:
        left, right = x(fault["start"]), x(fault["end"])
        title = html.escape(f"{fault['name']} {json.dumps(fault.get('detail', {}))}")
        parts.append(
            f'<rect x="{left:.1f}" y="0" width="{max(1.0, right - left):.1f}" '
            f'height="{ROW * len(LABELS)}" fill="#ccc" opacity="0.5"><title>{title}</title></rect>'
        )
    for row, name in enumerate(LABELS):
        parts.append(f'<text x="2" y="{row * ROW + 12}" font-size="10">{name}</text>')
    for op in ops:
        y = ROWS.get(op.f, 0) * ROW + 15 + (op.process % 7)
        parts.append(
            f'<circle cx="{x(op.start):.1f}" cy="{y}" r="1.5" fill="{COLORS[op.outcome]}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_latency(ops: list[Op], t0: int, span: int) -> str:
    done = [op for op in ops if op.end is not None and op.outcome == OK]
    if not done:
        return ""
    worst = max(op.end - op.start for op in done if op.end is not None) or 1
    parts = [f'<svg width="{WIDTH}" height="{LAT}">']
    for op in done:
        assert op.end is not None
        latency = op.end - op.start
        cx = (op.start - t0) / span * WIDTH
        cy = LAT - latency / worst * (LAT - 10)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="1.2" fill="#3d5a80"/>')
    parts.append(f'<text x="2" y="10" font-size="10">max {worst / 1e6:.0f} ms</text></svg>')
    return "".join(parts)


def _evidence_table(verdict: dict[str, Any], title: str = "Evidence") -> str:
    """What the run had to show (thresholds scaled to its time limit) against what it did,
    and why it fell short, so an invalid verdict for lack of evidence explains itself."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(need))}</td>"
        f"<td>{html.escape(str(verdict['observed'].get(name)))}</td></tr>"
        for name, need in verdict["required"].items()
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in verdict["reasons"])
    return (
        f"<h2>{title}</h2><table border=1><tr><th>needed</th><th>at least</th><th>observed</th>"
        f"</tr>{rows}</table>"
        + (f"<p>Not enough evidence:</p><ul>{reasons}</ul>" if reasons else "")
    )


def write_report(
    path: Path, ops: list[Op], faults: list[dict[str, Any]], results: dict[str, Any]
) -> None:
    times = [op.start for op in ops] + [op.end for op in ops if op.end is not None]
    t0 = min(times, default=0)
    span = max(1, max(times, default=1) - t0)
    rows = "".join(
        f"<tr><td>{name}</td><td>{html.escape(str(v.get('valid')))}</td></tr>"
        for name, v in results.items()
        if isinstance(v, dict)
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>jepsen_like run</title>"
        f"<h1>valid: {results['valid']}</h1><p>{results['operations']} operations, "
        f"{results['faults']} faults (shaded)</p><table border=1>{rows}</table>"
        + _evidence_table(results["evidence"])
        + (
            _evidence_table(results["job_evidence"], "Job workload evidence")
            if results["job_evidence"]["configured"]
            else ""
        )
        + "<h2>Operations (green ok, red fail, amber unknown)</h2>"
        + _svg_timeline(ops, faults, t0, span)
        + "<h2>Latency of successful operations</h2>"
        + _svg_latency(ops, t0, span)
        + f"<h2>Verdicts</h2><pre>{html.escape(json.dumps(results, indent=2, default=str))}</pre>"
    )
