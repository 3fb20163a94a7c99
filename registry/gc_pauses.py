"""Garbage-collector pauses: timed for the metrics, and made rarer.

CPython's cyclic collector stops every thread of the process while it runs, and a full
(generation 2) collection walks every tracked object: with 10,000 agents in the view that
is a few hundred thousand objects and a pause of a few hundred milliseconds, which every
request in flight waits out. Timing each collection by generation makes such pauses visible
(``mcp_registry_gc_pause_seconds``) next to the request latencies they inflate.

:func:`tune_collector` sets the server's thresholds. The view is a large tree of long-lived,
acyclic objects (registrations, indexes, history) that reference counting frees; the cycles
the collector is for are among the short-lived request and connection objects. CPython's
defaults (700, 10, 10) make it walk that whole tree again each time it grows by a quarter:
measured in S1 (new agents on 3 replicas, benchmarks/RESULTS.md "S1 CPU per write"),
collections took 0.248 ms per write summed over the replicas; with these thresholds 0.07 ms,
and no full collection in the phase.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

THRESHOLDS = (10_000, 10, 100)
"""A young collection every 10,000 net allocations instead of 700, a middle one every 10 young
ones as before, and a full one no sooner than every 100 middle ones (10 million net
allocations) instead of 10, and then only once the objects promoted into the oldest generation
since the last full one exceed a quarter of it (CPython's own rule, unchanged, so a quiet
server collected rarely before too). Cyclic garbage promoted before it became garbage (a
kept-alive connection that closes) waits for that full collection, at least ten times longer
than with the defaults; young cyclic garbage lives up to 14 times more allocations. Revisit
on an interpreter whose collector works differently (3.14's is incremental)."""


def tune_collector() -> None:
    """Set :data:`THRESHOLDS` for this process (the server's, not a test's: process-wide)."""
    gc.set_threshold(*THRESHOLDS)


class GcPauses:
    """Observes every collection's duration into ``histogram`` (labelled by generation) while
    installed. ``gc.callbacks`` is process-wide, so :meth:`remove` undoes :meth:`install`."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._started = 0.0

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Collections never nest: the collector holds the GIL and is not re-entered.
        if phase == "start":
            self._started = time.perf_counter()
        else:
            elapsed = time.perf_counter() - self._started
            self._histogram.labels(str(info["generation"])).observe(elapsed)
