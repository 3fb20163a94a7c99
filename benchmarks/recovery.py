"""S5: restart a node whose log holds N events; time from process start to /ready 200.

The log is built offline, directly with the node's own storage and state machine
(``registry.store.Store`` + ``registry.commit.StateMachine``), not through 100,000 HTTP calls:
those would measure the write path for minutes, not recovery. It is written the way
``registry.commit.LocalLog`` writes a single node's log: group-committed batches (of
``BATCH`` events, a typical group under load), each applied to the view, and a snapshot
whenever SNAPSHOT_EVERY entries have accumulated since the last one (the default setting).
Because batches do not line up with the snapshot interval, the last snapshot lands below the
end of the log and a restart replays the tail after it, as a real restart would.

The events: ``N // 10`` SDK-shaped agents (one tool, one dependency), each registered and then
re-registered with a changed endpoint, so most events are updates that touch resolution.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.systems import peak_rss_mib
from registry import events, registration
from registry.commit import StateMachine
from registry.config import Config
from registry.store import Store
from registry.view import View
from tests.processes import Registry

BATCH = 64
LMDB_DIR = "lmdb"
"""Where ``registry.node.Node.open`` keeps the LMDB environment inside DATA_DIR."""


def build_log(data_dir: Path, count: int) -> dict[str, int]:
    """Write ``count`` events into ``data_dir`` as a single node would; where it snapshotted."""
    defaults = Config()
    store = Store(str(data_dir / LMDB_DIR))
    machine = StateMachine(
        store, View(history_limit=defaults.events_history), defaults.snapshot_every
    )
    io = ThreadPoolExecutor(max_workers=1)
    agents = max(count // 10, 1)

    async def build() -> None:
        for first in range(1, count + 1, BATCH):
            batch = []
            for index in range(first, min(first + BATCH, count + 1)):
                n = index % agents
                agent = workload.body("s5", n, port=1024 + (index // agents) % 60_000)
                batch.append((index, events.upsert(registration.from_heartbeat(agent), index)))
            store.append([(index, events.encode(event)) for index, event in batch])
            for index, event in batch:
                machine.apply(index, event)
            if machine.snapshot_due():
                await machine.snapshot(io)

    try:
        asyncio.run(build())
        return {"events": store.last_index(), "snapshot_index": store.snapshot_index()}
    finally:
        io.shutdown()
        store.close()


def _ready_after(url: str, started: float, limit: float = 60.0) -> float:
    """Seconds from ``started`` until ``url``/ready answers 200 (bounded poll)."""
    while time.monotonic() - started < limit:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready within {limit} s of starting")


def restarts(data_dir: Path, count: int) -> dict[str, Any]:
    """Start a single node on ``data_dir`` ``count`` times; each start's time to /ready."""
    times, rss = [], 0.0
    for _ in range(count):
        node = Registry(data_dir)
        started = time.monotonic()
        try:
            node.start()
            times.append(_ready_after(node.url, started))
            assert node.proc is not None
            rss = peak_rss_mib(node.proc.pid)
        finally:
            if node.proc is not None and node.proc.poll() is None:
                node.kill()
    return {
        "trials_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "peak_rss_mib": [rss],
    }
