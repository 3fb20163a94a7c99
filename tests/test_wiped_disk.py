"""A member that lost its disk never votes or counts toward a majority until it has caught up.

The operator's scenario (issue 14): with 3 replicas, leader A commits a registration with C
while B is paused; C loses its disk (its PVC deleted) and restarts empty; A dies; B resumes. If
the empty C's vote counted, B (without the registration) would lead and the acknowledged
registration would be gone for good once A came back and followed B.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from replication.journal import LmdbJournal
from tests.conftest import steadily
from tests.processes import Registry
from tests.test_cluster import (
    Cluster,
    _has_members,
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


async def _two_disks_lost(session: aiohttp.ClientSession, cluster: Cluster) -> int:
    """A 3-member cluster commits a write, then all stop and members 0 and 1 lose their
    disks; the member that kept its disk (the keeper, returned) is left stopped too."""
    cluster.start_all()
    await all_ready(session, cluster.nodes)
    assert await register(session, cluster.nodes[0], "acknowledged")
    await converged(session, cluster.nodes)
    for node in cluster.nodes:
        node.kill()
    for lost in (0, 1):
        shutil.rmtree(cluster.nodes[lost].data_dir)
    return 2


def _assert_the_keeper_holds_the_write(keeper: Registry) -> None:
    """The acknowledged write is still in the keeper's log (its view applies it once a leader
    says it is committed, which nobody can now)."""
    keeper.stop()
    journal = LmdbJournal(str(keeper.data_dir / "raft"))
    assert any(b"acknowledged" in bytes(command) for command, _, _ in journal[:])
    journal._destroy()


async def test_two_members_that_lost_their_disks_do_not_elect_a_leader_of_their_own(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """Two disks lost at once is beyond what 3 members promise to survive, but while the
    member that kept its disk is up it must stall, not lose. The two emptied members look
    like two members of a new cluster, a majority of three: at first contact they would
    elect one of themselves, and the member holding every acknowledged write (campaigning,
    its votes from them uncounted) would be overwritten by it. Its vote request ends their
    first contact (replication/incarnation.py)."""
    cluster = Cluster(tmp_path, registries)
    async with aiohttp.ClientSession() as session:
        keeper = await _two_disks_lost(session, cluster)
        # The keeper first, then the emptied ones one at a time: the first hears the keeper
        # (its hello, or its campaign) before the second can vote for it. Started together
        # while the keeper is slow: the next test.
        cluster.start(keeper)
        cluster.start(0)
        await until(lambda: _status_is(session, cluster.nodes[0], first_contact=False), 20)
        cluster.start(1)

        async def no_leader() -> bool:
            roles = [await _role(session, node) for node in cluster.nodes]
            return "leader" not in roles

        await steadily(no_leader, 8)
        assert not await register(session, cluster.nodes[1], "on-an-empty-leader")
    _assert_the_keeper_holds_the_write(cluster.nodes[keeper])


async def test_two_emptied_members_wait_for_a_slow_keeper_before_a_first_election(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """The member that kept its disk is slow (paused here: after a move with DNS answers
    cached it is as good as mute for a few seconds) while the two emptied members start
    together. At first contact they used to elect each other within an election timeout;
    now they wait for every member's hello or the settling time, the keeper's hello ends
    their first contact, and the cluster stalls instead of losing the write
    (replication/incarnation.py)."""
    cluster = Cluster(tmp_path, registries)
    async with aiohttp.ClientSession() as session:
        keeper = await _two_disks_lost(session, cluster)
        cluster.start(keeper)
        await until(lambda: _status_is(session, cluster.nodes[keeper], first_contact=False), 20)
        cluster.nodes[keeper].pause()
        cluster.start(0)
        cluster.start(1)

        async def no_leader(nodes: list[Registry]) -> bool:
            return "leader" not in [await _role(session, node) for node in nodes]

        await until(lambda: _status_is(session, cluster.nodes[1], first_contact=True), 20)
        # The keeper stays silent for 3 s more: a fault's length, not a deadline, so not
        # scaled (it must stay below the settling time, 11.6 s here). Each election timeout
        # is at most 1.2 s: the two emptied members, connected to each other, have rounds
        # enough to elect one of themselves meanwhile.
        silent_until = time.monotonic() + 3.0
        while time.monotonic() < silent_until:
            assert await no_leader(cluster.nodes[:2]), "two emptied members elected a leader"
            await asyncio.sleep(0.1)
        cluster.nodes[keeper].resume()
        await until(lambda: _status_is(session, cluster.nodes[0], first_contact=False), 20)
        await until(lambda: _status_is(session, cluster.nodes[1], first_contact=False), 20)
        await steadily(lambda: no_leader(cluster.nodes), 8)
    _assert_the_keeper_holds_the_write(cluster.nodes[keeper])


async def _status_is(session: aiohttp.ClientSession, node: Registry, **want: object) -> bool:
    try:
        status = await get_json(session, f"{node.url}/api/v1/cluster")
    except (TimeoutError, aiohttp.ClientError):
        return False
    return all(status.get(key) == value for key, value in want.items())


async def test_a_member_that_lost_its_disk_takes_the_clusters_membership_not_its_envs(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A cluster scaled 3 -> 5; pod 1 loses its disk and restarts with the peers its env gives
    (what discovery makes of REGISTRY_REPLICAS=3). It starts with the running cluster's five
    members: listing three, it would refuse the connections of pods 3 and 4, and never hear a
    leader that is one of them (found by review)."""
    cluster = Cluster(tmp_path, registries, n=5)
    addresses = [cluster.address(i) for i in range(5)]
    cluster.start_first(3)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes[:3], timeout=20)
        for i in (3, 4):
            cluster.start(i, REGISTRY_PEERS=",".join(addresses[: i + 1]))
        await until(lambda: _has_members(session, cluster.nodes[0], addresses), 40)
        await all_ready(session, cluster.nodes, timeout=30)
        assert await register(session, cluster.nodes[0], "before")
        await converged(session, cluster.nodes)

        cluster.nodes[1].kill()
        shutil.rmtree(cluster.nodes[1].data_dir)
        lost = cluster.start(1, REGISTRY_PEERS=",".join(addresses[:3]))
        started = [json.loads(x) for x in lost.log().splitlines() if '"raft started"' in x][-1]
        assert sorted(started["peers"]) == sorted(a for a in addresses if a != addresses[1])
        await until(lambda: _status_is(session, lost, recognised=True, first_contact=False), 30)
        await all_ready(session, [lost], timeout=30)  # recognised, then caught up and applied
        assert "before" in await agent_ids(session, lost, linearizable=True)
