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
    """A write's outcome from an error answer: a 503 refused before submission ("no reachable
    leader") certainly did not apply; any other 503 may have; other errors did not."""
    if resp.status != 503:
        return FAIL
    detail = str((await resp.json()).get("detail", ""))
    return FAIL if detail.startswith("no reachable leader") else INFO
