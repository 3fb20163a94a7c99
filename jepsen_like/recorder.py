"""What every client shares: the history file it appends to, and how it reads an error answer."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from jepsen_like.history import FAIL, INFO, Event


class Recorder:
    """Appends events to the history file, one JSON object per line, as they happen."""

    def __init__(self, path: Path) -> None:
        self.out = path.open("w", buffering=1)
        self.last: dict[int, Event] = {}

    def __call__(self, event: Event) -> None:
        self.last[event.process] = event
        self.out.write(json.dumps(event.__dict__) + "\n")


async def refusal(resp: aiohttp.ClientResponse) -> str:
    """A write's outcome from an error answer: a 503 whose detail says it certainly did not
    apply (:func:`never_applied`) did not; any other 503 may have; other errors did not."""
    if resp.status != 503:
        return FAIL
    detail = str((await resp.json()).get("detail", ""))
    return FAIL if never_applied(detail) else INFO


def never_applied(detail: str) -> bool:
    """Whether a 503's detail says the write certainly did not take effect. Raft: refused
    before submission ("no reachable leader"). PostgreSQL mode (registry/pg_log.py): refused
    before it was queued, while the log's connection is down ("database ... unreachable: ...",
    "connecting to the database"); a barrier (run before any proposal) that could not read the
    log's head; an append the server rolled back or that was never sent ("...; not
    committed"). The registry promises these, so the checkers hold it to them: such a write
    seen applied afterwards is a linearizability failure. Anything else (Raft's "not committed
    within 5s; outcome unknown", PostgreSQL's "append not confirmed ...; outcome unknown") may
    have applied."""
    return (
        detail.startswith("no reachable leader")
        or (detail.startswith("database ") and " unreachable: " in detail)
        or detail == "connecting to the database"
        or detail == "could not read the database log's head"
        or detail.endswith("; not committed")
    )
