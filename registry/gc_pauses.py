"""Garbage-collector pauses, timed for the metrics.

CPython's cyclic collector stops every thread of the process while it runs, and a full
(generation 2) collection walks every tracked object: with 10,000 agents in the view that
is a few hundred thousand objects and a pause of a few hundred milliseconds, which every
request in flight waits out. Timing each collection by generation makes such pauses visible
(``mcp_registry_gc_pause_seconds``) next to the request latencies they inflate.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram


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
