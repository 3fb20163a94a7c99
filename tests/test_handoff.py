"""replication/handoff.py: callbacks from another thread reach the loop in order, a batch per
wakeup, and one that fails neither stops the others nor the thread that put it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from replication.handoff import Handoff
from tests.conftest import eventually


async def test_callbacks_from_a_thread_run_in_order_with_one_wakeup_per_batch() -> None:
    loop = asyncio.get_running_loop()
    wakeups = 0
    threadsafe = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return threadsafe(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:
        handoff = Handoff(loop)
        ran: list[int] = []

        def burst(first: int) -> None:  # a tick committing many entries while the loop is busy
            for i in range(first, first + 200):
                handoff.put(ran.append, i)

        thread = threading.Thread(target=burst, args=(0,))
        thread.start()
        thread.join()  # the loop is blocked here: nothing has been drained yet
        assert ran == [] and wakeups == 1
        await eventually(lambda: len(ran) == 200)
        burst(200)  # the next batch wakes the loop again, once, and keeps the order
        await eventually(lambda: len(ran) == 400)
        assert ran == list(range(400)) and wakeups == 2
    finally:
        del loop.call_soon_threadsafe


async def test_a_failing_callback_is_reported_and_the_rest_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        handoff = Handoff(loop)
        ran: list[str] = []

        def fails() -> None:
            raise ValueError("boom")

        handoff.put(ran.append, "before")
        handoff.put(fails)
        handoff.put(ran.append, "after")
        await eventually(lambda: len(ran) == 2)
        assert ran == ["before", "after"]
        assert [type(c["exception"]) for c in reported] == [ValueError]
    finally:
        loop.set_exception_handler(None)


def test_a_closed_loop_drops_the_callback_without_raising() -> None:
    loop = asyncio.new_event_loop()
    handoff = Handoff(loop)
    loop.close()
    for _ in range(100):  # pysyncobj's tick must not be aborted by a shutdown
        handoff.put(print, "never")
    assert handoff._queue == []  # nor may what it puts after pile up for nobody
