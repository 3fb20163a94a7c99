"""One knob for every deadline in the suite: ``TEST_TIME_SCALE`` (default 1).

A loaded 2-core machine runs three registry processes, an SDK agent and the test itself at once,
so deadlines that hold on a quiet box can miss there. Rather than tightening or loosening sleeps
one by one, every wait for a condition takes its deadline through ``scaled`` and a slow machine
sets one multiplier (``TEST_TIME_SCALE=3 make test``). Deadlines only bound polls: scaling them
never changes what a test asserts, only how long it waits before calling a condition unmet.
"""

from __future__ import annotations

import os


def _read_scale() -> float:
    raw = os.environ.get("TEST_TIME_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"TEST_TIME_SCALE must be a number, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"TEST_TIME_SCALE must be at least 1, got {raw!r}")
    return value


TIME_SCALE = _read_scale()


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the machine's multiplier: use for every poll deadline."""
    return seconds * TIME_SCALE
