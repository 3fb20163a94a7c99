"""The tick thread's way onto the event loop: callbacks run in the order given, one loop
wakeup per batch.

Every committed entry crosses from pysyncobj's tick thread to the loop (to be applied), and
every write's result after it (to settle its future). ``loop.call_soon_threadsafe`` for each
would cost a write to the loop's wakeup pipe and a handle per call, several per entry under
load (issue 14's profile: 5.6 to 6.7% of each replica). Here the tick thread appends to one
queue and schedules a drain only when none is pending, so a tick that commits many entries
wakes the loop once, and the order across entries, results and installs stays the queue's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Handoff:
    """A FIFO of callbacks for one event loop, safe to fill from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        """Set once the loop refused a drain: it is closed, and nothing will run again."""

    def put(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop after everything put before it. Once the loop
        is closed (shutdown) nobody is left waiting, and the call is dropped: raising would
        abort the rest of pysyncobj's tick."""
        with self._lock:
            if self._closed:
                return
            self._queue.append((callback, args))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: drop what waits, and all that comes after
            with self._lock:
                self._closed = True
                self._queue.clear()

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
            # Cleared before running the batch: what is put meanwhile schedules the next
            # drain, which the loop runs after this one.
            self._scheduled = False
        for callback, args in batch:
            try:
                callback(*args)
            except Exception as exc:  # as call_soon would: report it, go on with the rest
                self._loop.call_exception_handler(
                    {"message": f"exception in {callback!r}", "exception": exc}
                )
