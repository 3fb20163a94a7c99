"""The workload: concurrent clients inside the client namespace, recording every operation.

Each worker owns a few agent ids and, at random, registers or updates them (through the
agent protocol's POST /heartbeat or the guide's POST /api/v1/agents), deregisters them, or
reads them linearizably, each time through a replica picked at random, as a ClusterIP
Service would. Every choice (id, operation, value, API, replica, pause) is drawn from a
generator seeded from the run's seed (``worker_steps``), so a seed replays what the clients
asked for, and each write records in the history which API carried it. An id is retired for
a fresh one after OPS_PER_KEY operations: the linearizability search is exponential in the
operations of one key whose outcome is unknown, and short per-key histories keep a 5-minute
run checkable in seconds. Heartbeaters keep a few agents alive with HEAD /heartbeat the way
the SDK does. Every invocation and completion goes to the history with monotonic timestamps.

The clients stop once the time limit has passed and the nemesis has finished its schedule
(``nemesis.done`` in the run directory), so no scheduled fault happens without clients.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from jepsen_like import jobs
from jepsen_like.checkers import converged
from jepsen_like.history import (
    DELETE,
    FAIL,
    GUIDE_API,
    HEARTBEAT,
    INFO,
    INVOKE,
    OK,
    READ,
    UNREACHABLE,
    WRITE,
    WRITE_APIS,
    Event,
)
from jepsen_like.recorder import Recorder, refusal

TIMEOUT = 3.0
KEYS_PER_WORKER = 3
OPS_PER_KEY = 50
"""Operations on one agent id before a worker moves on to a fresh one."""
NEMESIS_DONE = "nemesis.done"
"""Created in the run directory by the harness when every scheduled fault has been healed."""


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


async def _invoke(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    f: str,
    key: str,
    value: Any,
    url: str,
    node: str,
    api: str = "",
) -> None:
    """One operation; ``api`` (writes only) is ``PROTOCOL_API`` or ``GUIDE_API``."""
    record(Event(INVOKE, process, f, key, time.monotonic_ns(), value, node, api))
    outcome: str = INFO
    result: Any = None
    try:
        if f == WRITE:
            if api == GUIDE_API:
                body = {"id": key, "capabilities": ["jepsen"], "endpoint": f"http://{value}"}
                resp = await session.post(f"{url}/api/v1/agents", json=body)
            else:
                resp = await session.post(f"{url}/heartbeat", json=_agent(key, value))
            async with resp:
                outcome = OK if resp.status == 200 else await refusal(resp)
        elif f == DELETE:
            async with session.delete(f"{url}/api/v1/agents/{key}") as resp:
                if resp.status in (200, 404):
                    outcome, result = OK, resp.status == 200
                else:
                    outcome = await refusal(resp)
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
    except aiohttp.ClientConnectorError:
        # No connection could be made (refused: the replica is down or restarting). For a
        # POST that means nothing was sent. Not for a DELETE: aiohttp retries an idempotent
        # request on a new connection when a kept-alive one breaks, so the first attempt may
        # have been carried out before the replica died (a chaos run caught exactly that: a
        # delete recorded as failed, its effect seen by the next reads). Unknown outcomes are
        # what the linearizability search pays for: a power loss of every replica gave keys
        # 20-30 of them when refused POSTs counted as unknown too.
        outcome = FAIL if f == WRITE else INFO if f == DELETE else FAIL
    except (TimeoutError, aiohttp.ClientError):
        outcome = INFO if f in (WRITE, DELETE) else FAIL
    record(Event(outcome, process, f, key, time.monotonic_ns(), result, node, api))


@dataclass(frozen=True)
class Step:
    """What a worker does next: everything it chooses, nothing it observes."""

    key: str
    f: str
    value: str | None
    api: str
    node: int
    pause: float


def worker_steps(process: int, replicas: int, rng: random.Random) -> Iterator[Step]:
    """A worker's endless sequence of operations, drawn only from ``rng``: no answer from the
    cluster changes it, so the same seed asks for the same operations in the same order."""
    keys = [f"w{process}-{k}" for k in range(KEYS_PER_WORKER)]
    used = dict.fromkeys(keys, 0)
    n = 0
    while True:
        slot = rng.randrange(KEYS_PER_WORKER)
        key = keys[slot]
        used[key] += 1
        if used[key] > OPS_PER_KEY:
            key = keys[slot] = f"w{process}-{len(used)}"
            used[key] = 1
        f = rng.choices([WRITE, DELETE, READ], weights=[5, 1, 4])[0]
        n += 1
        value = f"v{process}x{n}:{1000 + n % 50000}" if f == WRITE else None
        api = rng.choice(WRITE_APIS) if f == WRITE else ""
        yield Step(key, f, value, api, rng.randrange(replicas), rng.uniform(0.0, 0.05))


async def _worker(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    urls: list[str],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    for step in worker_steps(process, len(urls), rng):
        if stop.is_set():
            return
        url, node = urls[step.node], f"n{step.node}"
        await _invoke(session, record, process, step.f, step.key, step.value, url, node, step.api)
        await asyncio.sleep(step.pause)


async def _heartbeater(
    session: aiohttp.ClientSession,
    record: Recorder,
    process: int,
    urls: list[str],
    stop: asyncio.Event,
    rng: random.Random,
    key: str = "",
    endpoint: str = "",
    up: asyncio.Event | None = None,
) -> None:
    """Keep agent ``key`` (default ``hb<process>``) alive; ``up`` is set once a registration
    was acknowledged (job producers wait for it before they claim)."""
    key = key or f"hb{process}"
    registered = False
    while not stop.is_set():
        node = rng.randrange(len(urls))
        if not registered:
            value, api = endpoint or f"hb:{2000 + process}", rng.choice(WRITE_APIS)
            await _invoke(session, record, process, WRITE, key, value, urls[node], f"n{node}", api)
            registered = True
            if up is not None and record.last[process].type == OK:
                up.set()
        else:
            await _invoke(session, record, process, HEARTBEAT, key, None, urls[node], f"n{node}")
            registered = not _last_was_gone(record, process)
        await asyncio.sleep(1.0)


async def _stop_when_done(run_dir: Path, time_limit: float, stop: asyncio.Event) -> None:
    """Set ``stop`` once the time limit has passed and the nemesis has healed its last fault."""
    stop_at = time.monotonic() + time_limit
    while time.monotonic() < stop_at or not (run_dir / NEMESIS_DONE).exists():
        await asyncio.sleep(0.2)
    stop.set()


async def workload(config: dict[str, Any], run_dir: Path) -> None:
    """Run until the time limit and the nemesis are done, then wait for the harness to heal,
    then read the end state."""
    urls: list[str] = config["urls"]
    rng = random.Random(config["seed"])
    stop = asyncio.Event()
    record = Recorder(run_dir / "history.jsonl")
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        workers = [
            _worker(session, record, p, urls, stop, _rng_of(rng)) for p in range(config["workers"])
        ]
        beaters = [
            _heartbeater(session, record, 100 + p, urls, stop, _rng_of(rng))
            for p in range(config["heartbeaters"])
        ]
        job_clients = _job_clients(session, record, urls, stop, rng, config)
        await asyncio.gather(
            _stop_when_done(run_dir, config["time_limit"], stop), *workers, *beaters, *job_clients
        )
        (run_dir / "workload.done").touch()
        healed = run_dir / "healed"
        deadline = time.monotonic() + 300
        while not healed.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        final: dict[str, Any] = {"digests": {}, "values": {}}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # replicas may still be applying the tail
            final["digests"] = await _digests(session, urls)
            if converged(final["digests"])["valid"]:
                break
            await asyncio.sleep(0.5)
        async with session.get(f"{urls[0]}/api/v1/agents?consistency=linearizable") as resp:
            for agent in (await resp.json())["agents"]:
                final["values"][agent["id"]] = agent["endpoint"].removeprefix("http://")
        final["jobs"] = await jobs.final_jobs(session, urls)
        (run_dir / "final.json").write_text(json.dumps(final))


def _job_clients(
    session: aiohttp.ClientSession,
    record: Recorder,
    urls: list[str],
    stop: asyncio.Event,
    rng: random.Random,
    config: dict[str, Any],
) -> list[Coroutine[Any, Any, None]]:
    """The MeshJob workload (jepsen_like/jobs.py): submitters (processes 300+), producer pairs
    (200+, agents ``jw<i>``) and a heartbeater for every producer's agent (400+)."""
    clients: list[Coroutine[Any, Any, None]] = [
        jobs.submitter(jobs.JobClient(session, record, 300 + s, urls), stop, _rng_of(rng), f"s{s}")
        for s in range(config.get("submitters", 0))
    ]
    for pair in range(config.get("producer_pairs", 0)):
        producers, ups = [], []
        for i in (2 * pair, 2 * pair + 1):
            instance, up = f"jw{i}", asyncio.Event()
            producers.append(
                jobs.Producer(jobs.JobClient(session, record, 200 + i, urls), instance)
            )
            ups.append(up)
            # The cancel a registry forwards to the owner meets a closed port at once.
            endpoint = f"127.0.0.1:{3000 + i}"
            clients.append(
                _heartbeater(
                    session, record, 400 + i, urls, stop, _rng_of(rng), instance, endpoint, up
                )
            )
        clients.append(jobs.producer_pair((producers[0], producers[1]), ups, stop, _rng_of(rng)))
    return clients


def _rng_of(rng: random.Random) -> random.Random:
    """A client's own generator, seeded from the run's."""
    return random.Random(rng.random())


async def _digests(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, str]:
    digests = {}
    for i, url in enumerate(urls):
        try:
            async with session.get(f"{url}/api/v1/cluster") as resp:
                digests[f"n{i}"] = (await resp.json())["view_digest"]
        except (TimeoutError, aiohttp.ClientError):
            digests[f"n{i}"] = UNREACHABLE
    return digests
