"""Member removal that must be refused (``DELETE /api/v1/cluster/members/{id}``, and
``mcp-mesh-registry cluster remove`` which calls it): each refusal leaves the membership as it
was. Real registry processes; with AUTH_TOKEN set, as the deployment guide's admin calls are."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.processes import Registry
from tests.test_cluster import (
    Cluster,
    _has_members,
    all_ready,
    get_json,
    leader_of,
    members,
    register,
    subprocess_remove,
    until,
)

pytestmark = pytest.mark.slow

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def remove(
    session: aiohttp.ClientSession, node: Registry, member: str
) -> tuple[int, dict[str, str]]:
    async with session.delete(f"{node.url}/api/v1/cluster/members/{member}") as resp:
        return resp.status, await resp.json()


async def test_refused_removals_leave_the_membership_unchanged(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries, n=2, AUTH_TOKEN=TOKEN)
    cluster.start_all()
    everyone = sorted(cluster.address(i) for i in range(2))
    first, second = cluster.nodes
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        aiohttp.ClientSession() as anonymous,
    ):
        await all_ready(session, cluster.nodes)

        async def unchanged() -> None:
            for node in cluster.nodes:
                assert await members(session, node) == everyone
                status = await get_json(session, f"{node.url}/api/v1/cluster")
                assert all(m["connected"] for m in status["members"]), status
            assert await register(session, second, f"still-writable-{len(refusals)}")

        refusals: list[tuple[int, str]] = []
        unknown = "127.0.0.1:1"  # an address that never was a member
        for client, node, member in [
            (session, first, unknown),  # no such member
            (session, first, cluster.address(0)),  # itself
            (session, second, cluster.address(1)),  # itself, on the other node
            (anonymous, first, cluster.address(1)),  # a real member, but no token
        ]:
            status, body = await remove(client, node, member)
            refusals.append((status, body["error"]))
            await unchanged()
        assert refusals == [
            (404, "no such cluster member"),
            (409, "a node cannot remove itself: run this against another member"),
            (409, "a node cannot remove itself: run this against another member"),
            (401, "missing or wrong bearer token (AUTH_TOKEN is set)"),
        ]

        # The command line sends the AUTH_TOKEN from its environment, and says what was refused.
        done = subprocess_remove(first, unknown, AUTH_TOKEN=TOKEN)
        assert done.returncode == 1 and "no such cluster member" in done.stdout, done
        done = subprocess_remove(first, cluster.address(1))  # no AUTH_TOKEN in its environment
        assert done.returncode == 1 and "bearer token" in done.stdout, done
        await unchanged()


async def test_a_single_node_refuses_any_removal(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """Without ENABLE_LEADER_ELECTION there is nobody to remove: 409, and it stays itself."""
    node = Registry(tmp_path / "single", REGISTRY_INSTANCE_ID="solo", AUTH_TOKEN=TOKEN)
    registries.append(node.start())
    async with aiohttp.ClientSession(headers=AUTH) as session:
        status, body = await remove(session, node, "solo")
        assert (status, body["error"]) == (409, "a single-node registry has no other members")
        assert await members(session, node) == ["solo"]
        done = subprocess_remove(node, "anyone", AUTH_TOKEN=TOKEN)
        assert done.returncode == 1 and "no other members" in done.stdout, done
        assert await members(session, node) == ["solo"]


async def test_a_follower_that_missed_a_join_does_not_call_the_new_member_unknown(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A member joins while a follower is down; right after that follower comes back, asking
    it to remove the new member removes it (after catching up), instead of a 404 from its
    stale membership. Found by the chaos harness: the scale-down took such a 404 as done and
    left a stopped pod in a 4-member cluster."""
    cluster = Cluster(tmp_path, registries, n=4, AUTH_TOKEN=TOKEN)
    addresses = [cluster.address(i) for i in range(4)]
    cluster.start_first(3)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        await all_ready(session, cluster.nodes[:3], timeout=20)
        lead = await leader_of(session, cluster.nodes[:3])
        lagging = next(i for i in range(3) if i != lead)
        cluster.nodes[lagging].kill()
        cluster.start(3, REGISTRY_PEERS=",".join(addresses))
        live = [cluster.nodes[i] for i in range(4) if i != lagging]
        await until(lambda: _has_members(session, cluster.nodes[lead], addresses), 40)
        await all_ready(session, live, timeout=30)

        follower = cluster.start(lagging, REGISTRY_PEERS=",".join(addresses[:3]))

        async def answered() -> tuple[int, dict[str, str]] | None:
            status, body = await remove(session, follower, addresses[3])
            return None if status == 503 else (status, body)

        status, body = await until(answered, 30)
        assert (status, body) == (200, {"removed": addresses[3]})
        await until(lambda: _has_members(session, follower, addresses[:3]), 20)
        await until(lambda: _has_members(session, cluster.nodes[lead], addresses[:3]), 20)

        # The leader itself is refused at once, with the reason (pysyncobj's leader denies
        # removing itself, which used to be retried until the write timeout as "pending").
        lead = await leader_of(session, cluster.nodes[:3])
        other = next(cluster.nodes[i] for i in range(3) if i != lead)
        status, body = await remove(session, other, addresses[lead])
        assert (status, body["error"]) == (
            409,
            "that member is the leader: stop it first (the others elect a new leader), "
            "then remove it",
        )
        assert await members(session, other) == sorted(addresses[:3])
