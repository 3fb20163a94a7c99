"""Failover time: leader SIGKILL -> first write accepted by the survivors.

Runs a real 3-process cluster on loopback (the same processes as tests/test_cluster.py),
kills the leader with SIGKILL, and times how long until a survivor acknowledges a write.
Each trial restarts the killed node and waits until all three are ready again.

    python -m benchmarks.failover --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, leader_of, register


async def trial(session: aiohttp.ClientSession, cluster: Cluster, n: int) -> float:
    await all_ready(session, cluster.nodes)
    leader = await leader_of(session, cluster.nodes)
    survivors = [node for i, node in enumerate(cluster.nodes) if i != leader]
    cluster.nodes[leader].kill()
    killed = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        if await register(session, survivors[attempt % 2], f"failover-{n}-{attempt}"):
            elapsed = time.monotonic() - killed
            break
        if time.monotonic() - killed > 30:
            raise RuntimeError("no write accepted within 30 s of the leader kill")
        await asyncio.sleep(0.01)
    cluster.start(leader)
    return elapsed


async def run(trials: int) -> list[float]:
    started: list[Registry] = []
    with tempfile.TemporaryDirectory(prefix="failover-") as root:
        cluster = Cluster(Path(root), started)
        try:
            cluster.start_all()
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return [await trial(session, cluster, n) for n in range(trials)]
        finally:
            for node in started:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    times = asyncio.run(run(args.trials))
    print("trials (s):", " ".join(f"{t:.3f}" for t in times))
    print(f"median leader-kill -> first accepted write: {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
