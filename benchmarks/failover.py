"""Failover time: leader SIGKILL -> first write accepted, and -> every survivor ready again.

The one copy of the failover measurement: S4 of ``python -m benchmarks run`` calls
:func:`trial` under heartbeat load; ``python -m benchmarks.failover --trials 10`` runs it on
an idle cluster. A real 3-process cluster on loopback (the cluster tests' processes): the
leader is killed with SIGKILL, then survivors are polled until one acknowledges a write and
until every survivor answers /ready 200 naming a new leader (right after the kill a follower
still answers 200 naming the dead leader: that is not recovery). Each trial then restarts the
killed node; the next trial starts once all three are ready.

    python -m benchmarks.failover --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass

import aiohttp

from benchmarks.systems import ours
from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, leader_of, register

LIMIT = 30.0
"""A trial fails if the cluster has not recovered this long after the kill."""


@dataclass(frozen=True)
class Failover:
    first_write_s: float
    survivors_ready_s: float


async def _first_write(
    session: aiohttp.ClientSession, survivors: list[Registry], tag: str, killed: float
) -> float:
    for attempt in itertools.count():
        if await register(session, survivors[attempt % len(survivors)], f"{tag}-{attempt}"):
            return time.monotonic() - killed
        if time.monotonic() - killed > LIMIT:
            break
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no write accepted within {LIMIT} s of the leader kill")


async def _ready_under_new_leader(
    session: aiohttp.ClientSession, node: Registry, dead: str
) -> bool:
    try:
        async with session.get(f"{node.url}/ready") as resp:
            leader = resp.headers.get("X-Registry-Leader", "")
            return resp.status == 200 and leader not in ("", dead)
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _survivors_ready(
    session: aiohttp.ClientSession, survivors: list[Registry], dead: str, killed: float
) -> float:
    waiting = list(survivors)
    while time.monotonic() - killed <= LIMIT:
        answers = await asyncio.gather(
            *(_ready_under_new_leader(session, node, dead) for node in waiting)
        )
        waiting = [node for node, ok in zip(waiting, answers, strict=True) if not ok]
        if not waiting:
            return time.monotonic() - killed
        await asyncio.sleep(0.01)
    raise RuntimeError(f"survivors not ready under a new leader within {LIMIT} s")


async def trial(session: aiohttp.ClientSession, cluster: Cluster, n: int) -> Failover:
    """Kill the leader, time the recovery, restart the killed node."""
    await all_ready(session, cluster.nodes)
    leader = await leader_of(session, cluster.nodes)
    survivors = [node for i, node in enumerate(cluster.nodes) if i != leader]
    cluster.nodes[leader].kill()
    killed = time.monotonic()
    try:
        write, ready = await asyncio.gather(
            _first_write(session, survivors, f"failover-{n}", killed),
            _survivors_ready(session, survivors, cluster.address(leader), killed),
        )
    finally:
        cluster.start(leader)
    return Failover(write, ready)


async def trials(cluster: Cluster, count: int) -> list[Failover]:
    # 2 s per request: a write sent to a follower of the dead leader would otherwise wait for
    # the registry's own write timeout before the next attempt.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        return [await trial(session, cluster, n) for n in range(count)]


async def _idle(count: int) -> list[Failover]:
    with ours() as system:
        assert system.cluster is not None
        return await trials(system.cluster, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    results = asyncio.run(_idle(args.trials))
    writes = [r.first_write_s for r in results]
    readies = [r.survivors_ready_s for r in results]
    print("first write (s):", " ".join(f"{t:.3f}" for t in writes))
    print("survivors ready (s):", " ".join(f"{t:.3f}" for t in readies))
    print(f"median leader-kill -> first accepted write: {statistics.median(writes):.3f} s")
    print(f"median leader-kill -> all survivors ready: {statistics.median(readies):.3f} s")


if __name__ == "__main__":
    main()
