"""Timestamps as the Go registry writes them (RFC 3339, UTC, ``Z``)."""

from __future__ import annotations

import time
from functools import lru_cache


def iso_ms(ms: int) -> str:
    """``2026-11-23T20:56:09.948Z`` for wall-clock milliseconds ``ms``."""
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=1024)
def _iso_second(seconds: int) -> str:
    """The part before the milliseconds. Listings format thousands of last-seen times that
    fall within the same few seconds, and strftime was most of their cost."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def now_ms() -> int:
    """Wall-clock milliseconds: event timestamps (informative; never used for ordering)."""
    return time.time_ns() // 1_000_000
