"""Acknowledged writes survive a power loss (not only a SIGKILL), on a single node and on a
whole cluster losing power at once: every data directory on jepsen_like/lazyfs, which drops
what was not fsynced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from jepsen_like.lazyfs import Mount
from tests.processes import Registry
from tests.test_cluster import Cluster, agent_ids, all_ready, converged, register
from tests.test_lazyfs import PROBLEM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROBLEM is not None, reason=f"lazyfs unavailable: {PROBLEM}"),
]


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[list[Mount]]:
    """lazyfs mounts at tmp_path/n0.. (where the cluster puts its data directories)."""
    made: list[Mount] = []
    yield made
    for mount in made:
        mount.power_loss()


def _mount(tmp_path: Path, disks: list[Mount], i: int) -> None:
    disks.append(Mount(tmp_path / f"disk{i}", tmp_path / f"n{i}").start())


def _power_loss(nodes: list[Registry], disks: list[Mount]) -> None:
    """Every machine loses power at once: processes and unsynced data gone together."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    for i, mount in enumerate(disks):
        mount.power_loss()
        disks[i] = Mount(mount.backing, mount.mountpoint).start()


async def _write_many(
    session: aiohttp.ClientSession, nodes: list[Registry], count: int
) -> set[str]:
    ids = [f"agent-{i}" for i in range(count)]
    done = await asyncio.gather(
        *(register(session, nodes[i % len(nodes)], a) for i, a in enumerate(ids))
    )
    return {agent for agent, ok in zip(ids, done, strict=True) if ok}


async def test_a_single_node_keeps_every_acknowledged_write_through_a_power_loss(
    tmp_path: Path, registries: list[Registry], disks: list[Mount]
) -> None:
    _mount(tmp_path, disks, 0)
    node = Registry(tmp_path / "n0")
    registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [node])
        acknowledged = await _write_many(session, [node], 80)
        assert len(acknowledged) == 80
        _power_loss([node], disks)
        registries.append(node.start())
        await all_ready(session, [node])
        assert acknowledged <= await agent_ids(session, node)


async def test_a_cluster_keeps_every_acknowledged_write_when_all_nodes_lose_power(
    tmp_path: Path, registries: list[Registry], disks: list[Mount]
) -> None:
    for i in range(3):
        _mount(tmp_path, disks, i)
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        acknowledged = await _write_many(session, cluster.nodes, 90)
        assert len(acknowledged) == 90
        _power_loss(cluster.nodes, disks)
        cluster.start_all()
        await all_ready(session, cluster.nodes)
        for node in cluster.nodes:
            assert acknowledged <= await agent_ids(session, node, linearizable=True)
        await converged(session, cluster.nodes)
