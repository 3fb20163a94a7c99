"""A member that lost its disk never votes or counts toward a majority until it has caught up.

The operator's scenario (issue 14): with 3 replicas, leader A commits a registration with C
while B is paused; C loses its disk (its PVC deleted) and restarts empty; A dies; B resumes. If
the empty C's vote counted, B (without the registration) would lead and the acknowledged
registration would be gone for good once A came back and followed B.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import steadily
from tests.processes import Registry
from tests.test_cluster import (
    Cluster,
    agent_ids,
    all_ready,
    converged,
    get_json,
    leader_of,
    register,
    until,
)

pytestmark = pytest.mark.slow


async def _role(session: aiohttp.ClientSession, node: Registry) -> str | None:
    try:
        return str((await get_json(session, f"{node.url}/api/v1/cluster"))["role"])
    except (TimeoutError, aiohttp.ClientError):
        return None


async def test_an_emptied_member_cannot_elect_a_leader_missing_an_acknowledged_write(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        a = await leader_of(session, cluster.nodes)
        b, c = (a + 1) % 3, (a + 2) % 3
        assert await register(session, cluster.nodes[a], "before")
        await converged(session, cluster.nodes)  # B has heard the leader name C's incarnation

        assert cluster.nodes[b].proc is not None
        cluster.nodes[b].proc.send_signal(signal.SIGSTOP)
        try:
            assert await register(session, cluster.nodes[a], "acknowledged")  # A + C
            cluster.nodes[a].kill()
            cluster.nodes[c].kill()
            shutil.rmtree(cluster.nodes[c].data_dir)  # C's volume is gone
            cluster.start(c)
        finally:
            cluster.nodes[b].proc.send_signal(signal.SIGCONT)

        # B and the empty C are two of three members, but C's vote is not the vote of the
        # member that held the log: no leader, over many election timeouts (0.6-1.2 s).
        async def no_leader() -> bool:
            roles = [await _role(session, cluster.nodes[i]) for i in (b, c)]
            return "leader" not in roles

        await steadily(no_leader, 8)

        cluster.start(a)
        await all_ready(session, cluster.nodes, timeout=30)
        for node in cluster.nodes:
            assert {"before", "acknowledged"} <= await agent_ids(session, node, linearizable=True)
        await converged(session, cluster.nodes)
        # C is counted again once caught up (the leader says so in its next append_entries):
        # then, with A gone, B and C carry writes on their own.
        await until(lambda: _recognised(session, cluster.nodes[c]), 20)
        cluster.nodes[a].kill()
        await until(lambda: register(session, cluster.nodes[b], "after-recovery"), 20)


async def _recognised(session: aiohttp.ClientSession, node: Registry) -> bool:
    try:
        return bool((await get_json(session, f"{node.url}/api/v1/cluster"))["recognised"])
    except (TimeoutError, aiohttp.ClientError):
        return False
