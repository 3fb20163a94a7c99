"""The workload: concurrent clients inside the client namespace, recording every operation.

Each worker owns a few agent ids and, at random, registers or updates them (through the
agent protocol's POST /heartbeat or the guide's POST /api/v1/agents), deregisters them, or
reads them linearizably, each time through a replica picked at random, as a ClusterIP
Service would. An id is retired for a fresh one after OPS_PER_KEY operations: the
linearizability search is exponential in the operations of one key whose outcome is unknown,
and short per-key histories keep a 5-minute run checkable in seconds. Heartbeaters keep a few
agents alive with HEAD /heartbeat the way the SDK does. Every invocation and completion goes to
the history with monotonic timestamps.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp

from jepsen_like.history import (
    DELETE,
    FAIL,
    HEARTBEAT,
    INFO,
    INVOKE,
    OK,
    READ,
    WRITE,
    Event,
)

TIMEOUT = 3.0
KEYS_PER_WORKER = 3
OPS_PER_KEY = 50
"""Operations on one agent id before a worker moves on to a fresh one."""


class Recorder:
    """Appends events to the history file, one JSON object per line, as they happen."""

    def __init__(self, path: Path) -> None:
        self.out = path.open("w", buffering=1)
        self.last: dict[int, Event] = {}

    def __call__(self, event: Event) -> None:
        self.last[event.process] = event
        self.out.write(json.dumps(event.__dict__) + "\n")


def _last_was_gone(record: Recorder, process: int) -> bool:
    """The SDK re-registers with a full POST when HEAD answers 410."""
    last = record.last.get(process)
    return last is not None and last.value == "gone"


def _agent(agent_id: str, value: str) -> dict[str, Any]:
    host, port = value.rsplit(":", 1)
    return {
        "agent_id": agent_id,
        "name": "jepsen",
        "http_host": host,
        "http_port": int(port),
        "tools": [{"function_name": "f", "capability": "jepsen"}],
    }


async def _refusal(resp: aiohttp.ClientResponse) -> str:
    """A write's outcome from an error answer: a 503 refused before submission ("no reachable
    leader") certainly did not apply; any other 503 may have; other errors did not."""
    if resp.status != 503:
        return FAIL
    detail = str((await resp.json()).get("detail", ""))
    return FAIL if detail.startswith("no reachable leader") else INFO


async def _invoke(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    f: str,
    key: str,
    value: Any,
    url: str,
    node: str,
) -> None:
    record(Event(INVOKE, process, f, key, time.monotonic_ns(), value, node))
    outcome: str = INFO
    result: Any = None
    try:
        if f == WRITE:
            if random.random() < 0.5:
                body = _agent(key, value)
                resp = await session.post(f"{url}/heartbeat", json=body)
            else:
                body = {"id": key, "capabilities": ["jepsen"], "endpoint": f"http://{value}"}
                resp = await session.post(f"{url}/api/v1/agents", json=body)
            async with resp:
                outcome = OK if resp.status == 200 else await _refusal(resp)
        elif f == DELETE:
            async with session.delete(f"{url}/api/v1/agents/{key}") as resp:
                if resp.status in (200, 404):
                    outcome, result = OK, resp.status == 200
                else:
                    outcome = await _refusal(resp)
        elif f == READ:
            path = f"{url}/api/v1/agents/{key}?consistency=linearizable"
            async with session.get(path) as resp:
                if resp.status == 200:
                    outcome, result = OK, (await resp.json())["endpoint"].removeprefix("http://")
                elif resp.status == 404:
                    outcome, result = OK, None
                else:
                    outcome = FAIL  # a read that did not answer changed nothing
        elif f == HEARTBEAT:
            async with session.head(f"{url}/heartbeat/{key}") as resp:
                if resp.status in (200, 202):
                    outcome, result = OK, "ok"
                elif resp.status == 410:
                    outcome, result = OK, "gone"
                else:
                    outcome = FAIL
    except (TimeoutError, aiohttp.ClientError):
        outcome = INFO if f in (WRITE, DELETE) else FAIL
    record(Event(outcome, process, f, key, time.monotonic_ns(), result, node))


async def _worker(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    urls: list[str],
    stop_at: float,
    rng: random.Random,
) -> None:
    keys = [f"w{process}-{k}" for k in range(KEYS_PER_WORKER)]
    used = dict.fromkeys(keys, 0)
    n = 0
    while time.monotonic() < stop_at:
        slot = rng.randrange(KEYS_PER_WORKER)
        key = keys[slot]
        used[key] += 1
        if used[key] > OPS_PER_KEY:
            key = keys[slot] = f"w{process}-{len(used)}"
            used[key] = 1
        f = rng.choices([WRITE, DELETE, READ], weights=[5, 1, 4])[0]
        n += 1
        value = f"v{process}x{n}:{1000 + n % 50000}" if f == WRITE else None
        node = rng.randrange(len(urls))
        await _invoke(session, record, process, f, key, value, urls[node], f"n{node}")
        await asyncio.sleep(rng.uniform(0.0, 0.05))


async def _heartbeater(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    urls: list[str],
    stop_at: float,
    rng: random.Random,
) -> None:
    key = f"hb{process}"
    registered = False
    while time.monotonic() < stop_at:
        node = rng.randrange(len(urls))
        if not registered:
            await _invoke(
                session, record, process, WRITE, key, f"hb:{2000 + process}", urls[node], f"n{node}"
            )
            registered = True
        else:
            await _invoke(session, record, process, HEARTBEAT, key, None, urls[node], f"n{node}")
            registered = not _last_was_gone(record, process)
        await asyncio.sleep(1.0)


async def workload(config: dict[str, Any], run_dir: Path) -> None:
    """Run until the time limit, then wait for the harness to heal, then read the end state."""
    urls: list[str] = config["urls"]
    rng = random.Random(config["seed"])
    stop_at = time.monotonic() + config["time_limit"]
    record = Recorder(run_dir / "history.jsonl")
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        workers = [
            _worker(session, record, p, urls, stop_at, random.Random(rng.random()))
            for p in range(config["workers"])
        ]
        beaters = [
            _heartbeater(session, record, 100 + p, urls, stop_at, random.Random(rng.random()))
            for p in range(config["heartbeaters"])
        ]
        await asyncio.gather(*workers, *beaters)
        (run_dir / "workload.done").touch()
        healed = run_dir / "healed"
        deadline = time.monotonic() + 300
        while not healed.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        final: dict[str, Any] = {"digests": {}, "values": {}}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # replicas may still be applying the tail
            final["digests"] = await _digests(session, urls)
            if len(set(final["digests"].values())) == 1:
                break
            await asyncio.sleep(0.5)
        async with session.get(f"{urls[0]}/api/v1/agents?consistency=linearizable") as resp:
            for agent in (await resp.json())["agents"]:
                final["values"][agent["id"]] = agent["endpoint"].removeprefix("http://")
        (run_dir / "final.json").write_text(json.dumps(final))


async def _digests(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, str]:
    digests = {}
    for i, url in enumerate(urls):
        try:
            async with session.get(f"{url}/api/v1/cluster") as resp:
                digests[f"n{i}"] = (await resp.json())["view_digest"]
        except (TimeoutError, aiohttp.ClientError):
            digests[f"n{i}"] = "unreachable"
    return digests
