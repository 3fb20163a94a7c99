"""Timestamps as the Go registry writes them (RFC 3339, UTC, ``Z``)."""

from __future__ import annotations

import time


def iso_ms(ms: int) -> str:
    """``2026-11-23T20:56:09.948Z`` for wall-clock milliseconds ``ms``."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def now_ms() -> int:
    """Wall-clock milliseconds: event timestamps (informative; never used for ordering)."""
    return time.time_ns() // 1_000_000
