"""Three real registry processes replicating with Raft over loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import agent_body, eventually, steadily
from tests.ports import free_port
from tests.processes import CLUSTER_KEY, Registry
from tests.timing import scaled

pytestmark = pytest.mark.slow

ELECTIONS = 4.0
"""Seconds that span several election timeouts (0.6-1.2 s each at the default lease): long
enough for anything that could make a node join, elect or become ready to have happened."""


class Cluster:
    """N registry processes that know each other through REGISTRY_PEERS."""

    def __init__(self, root: Path, started: list[Registry], n: int = 3, **env: str) -> None:
        self.root = root
        self.started = started
        self.raft_ports = [free_port() for _ in range(n)]
        self.peers = ",".join(f"127.0.0.1:{port}" for port in self.raft_ports)
        self.env = {"ENCRYPTION_KEY": CLUSTER_KEY, **env}
        self.nodes = [self._make(i) for i in range(n)]

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.raft_ports[i]}"

    def _make(self, i: int, port: int | None = None, **env: str) -> Registry:
        settings = {
            "ENABLE_LEADER_ELECTION": "true",
            "REGISTRY_PEERS": self.peers,
            "RAFT_PORT": str(self.raft_ports[i]),
            "REGISTRY_INSTANCE_ID": f"n{i}",
            **self.env,
            **env,
        }
        return Registry(self.root / f"n{i}", port=port, **settings)

    def start(self, i: int, **env: str) -> Registry:
        node = self._make(i, port=self.nodes[i].port, **env)
        self.nodes[i] = node
        self.started.append(node.start())
        return node

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def start_first(self, count: int) -> None:
        """The first ``count`` nodes as a cluster of their own (the others join it later, as
        pods of a scaled-up StatefulSet do)."""
        peers = ",".join(self.address(i) for i in range(count))
        for i in range(count):
            self.start(i, REGISTRY_PEERS=peers)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


async def ready(session: aiohttp.ClientSession, node: Registry) -> bool:
    try:
        async with session.get(f"{node.url}/ready") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def until(check: Any, timeout: float = 20.0) -> Any:
    """``eventually`` at a pace suited to HTTP round trips to several processes."""
    return await eventually(check, timeout, every=0.05)


async def all_ready(
    session: aiohttp.ClientSession, nodes: list[Registry], timeout: float = 20.0
) -> None:
    async def check() -> bool:
        return all(await asyncio.gather(*(ready(session, n) for n in nodes)))

    await until(check, timeout)


async def leader_of(session: aiohttp.ClientSession, nodes: list[Registry]) -> int:
    """The position in ``nodes`` of the node every reachable node agrees leads: the Raft
    leader, or in PostgreSQL mode (tests/pg_replicas.py) the decider, which like the leader
    is the one node that decides health and sweeps jobs."""

    async def check() -> int | None:
        statuses = []
        for node in nodes:
            try:
                statuses.append(await get_json(session, f"{node.url}/api/v1/cluster"))
            except aiohttp.ClientError:
                return None
        leads = [s["role"] in ("leader", "decider") for s in statuses]
        if leads.count(True) != 1 or len({s["leader"] for s in statuses}) != 1:
            return None
        return leads.index(True) + 1  # +1: position 0 must count as found

    return int(await until(check)) - 1


async def converged(session: aiohttp.ClientSession, nodes: list[Registry]) -> str:
    """Wait until every node reports the same view digest; return it."""

    async def check() -> str | None:
        digests = {
            (s["view_digest"], s["applied_index"])
            for s in [await get_json(session, f"{n.url}/api/v1/cluster") for n in nodes]
        }
        return next(iter(digests))[0] if len(digests) == 1 else None

    return str(await until(check))


async def register(session: aiohttp.ClientSession, node: Registry, agent_id: str) -> bool:
    body = {"id": agent_id, "capabilities": ["c"], "endpoint": "http://x:1"}
    try:
        async with session.post(f"{node.url}/api/v1/agents", json=body) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def agent_ids(
    session: aiohttp.ClientSession, node: Registry, linearizable: bool = False
) -> set[str]:
    """The ids `node` lists; a plain read may lag the leader, a linearizable one may not."""
    query = "?consistency=linearizable" if linearizable else ""
    listing = await get_json(session, f"{node.url}/api/v1/agents{query}")
    return {agent["id"] for agent in listing["agents"]}


async def test_write_on_follower_read_everywhere(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        leader = await leader_of(session, nodes)
        follower, other = [n for i, n in enumerate(nodes) if i != leader]
        provider = agent_body("provider-1", "date", port=9100)
        async with session.post(f"{follower.url}/heartbeat", json=provider) as resp:
            assert resp.status == 200
            assert resp.headers["X-Registry-Leader"] == cluster.address(leader)
        consumer = agent_body("consumer-1", "greet", deps=["date"])
        async with session.post(f"{follower.url}/heartbeat", json=consumer) as resp:
            resolved = (await resp.json())["dependencies_resolved"]["greet_fn"][0]
            assert resolved["agent_id"] == "provider-1"
        # A linearizable read on another replica sees the acknowledged writes at once.
        listing = await get_json(session, f"{other.url}/agents?consistency=linearizable")
        assert {a["id"] for a in listing["agents"]} == {"provider-1", "consumer-1"}
        await converged(session, nodes)
        for node in nodes:
            async with session.head(f"{node.url}/heartbeat/consumer-1") as resp:
                assert resp.status == 200
            async with session.get(f"{node.url}/metrics") as resp:
                text = await resp.text()
                assert "mcp_registry_raft_term" in text
                assert "mcp_registry_raft_peers 3.0" in text


async def test_leader_kill_failover_and_catch_up(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        acked = set()
        for i in range(30):
            if await register(session, nodes[i % 3], f"before-{i}"):
                acked.add(f"before-{i}")
        assert len(acked) == 30
        leader = await leader_of(session, nodes)
        old_term = (await get_json(session, f"{nodes[leader].url}/api/v1/cluster"))["term"]
        nodes[leader].kill()
        alive = [i for i in range(3) if i != leader]
        survivors = [nodes[i] for i in alive]
        killed_at = time.monotonic()

        async def write_accepted() -> bool:
            return await register(session, survivors[0], "after-kill")

        await until(write_accepted, timeout=15)
        failover = time.monotonic() - killed_at
        acked.add("after-kill")
        assert failover < scaled(10), failover
        # Both survivors name the survivor that leads, elected in a later term: not the dead
        # leader that pysyncobj keeps naming while it still believes in it.
        new_leader = cluster.address(alive[await leader_of(session, survivors)])
        for node in survivors:
            status = await get_json(session, f"{node.url}/api/v1/cluster")
            assert status["leader"] == new_leader != cluster.address(leader)
            assert status["term"] > old_term
        for i in range(10):
            assert await register(session, survivors[i % 2], f"after-{i}")
            acked.add(f"after-{i}")
        restarted = cluster.start(leader)
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        assert acked <= await agent_ids(session, restarted)


async def test_restart_all_at_once_keeps_every_acknowledged_write(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        results = await asyncio.gather(
            *(register(session, cluster.nodes[i % 3], f"agent-{i}") for i in range(150))
        )
        acked = {f"agent-{i}" for i, ok in enumerate(results) if ok}
        assert len(acked) == 150
        before = await converged(session, cluster.nodes)
        for node in cluster.nodes:
            node.kill()
        cluster.start_all()
        await all_ready(session, cluster.nodes)
        # Every node rebuilds exactly the view all of them held before the crash (same
        # agents, registrations, history and applied index), not merely some common view.
        assert await converged(session, cluster.nodes) == before
        for node in cluster.nodes:
            assert acked <= await agent_ids(session, node)


async def test_initial_members_keep_their_membership_whatever_the_env_says_later(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A one-member cluster restarted with a peer list naming a second member that never ran:
    it rejoins the membership its first start had (and, alone again, leads and is ready),
    instead of taking the new list and waiting forever for a majority of two."""
    cluster = Cluster(tmp_path, registries, n=1)
    node = cluster.start(0)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [node])
        assert node.stop() == 0
        node = cluster.start(0, REGISTRY_PEERS=f"{cluster.peers},127.0.0.1:{free_port()}")
        await all_ready(session, [node])
        status = await get_json(session, f"{node.url}/api/v1/cluster")
    assert [member["id"] for member in status["members"]] == [cluster.address(0)]
    assert status["role"] == "leader"


async def test_node_with_wrong_key_cannot_join_or_inject(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start(0)
    cluster.start(1)
    intruder = cluster.start(2, ENCRYPTION_KEY="wrong-key-but-just-as-long-0123456")
    good = cluster.nodes[:2]
    intruder_address = cluster.address(2)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, good)
        assert await register(session, good[0], "legit-1")

        async def kept_out() -> bool:
            """The intruder never hears from the cluster: no leader, not ready, writes refused;
            the cluster never counts it connected nor holds anything it sent."""
            if await ready(session, intruder):
                return False
            body = {"id": "injected-1", "capabilities": ["c"]}
            async with session.post(f"{intruder.url}/api/v1/agents", json=body) as resp:
                if resp.status != 503 or "error" not in await resp.json():
                    return False
            if (await get_json(session, f"{intruder.url}/api/v1/cluster"))["leader"]:
                return False
            status = await get_json(session, f"{good[0].url}/api/v1/cluster")
            connected = [m["connected"] for m in status["members"] if m["id"] == intruder_address]
            if connected != [False]:
                return False
            for node in good:
                if await agent_ids(session, node) != {"legit-1"}:
                    return False
            return await agent_ids(session, intruder) == set()

        await steadily(kept_out, ELECTIONS, every=0.3)


async def test_a_new_cluster_missing_a_member_elects_after_raft_first_contact_wait(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """Two members of a new cluster of three start without the third: at first contact they
    wait RAFT_FIRST_CONTACT_WAIT for its hello (it may be a member that kept its disk,
    replication/incarnation.py), then elect without it. 4 s here, a third of the default:
    with the setting ignored the leader comes about 8 s later than this test allows."""
    wait = 4.0
    cluster = Cluster(tmp_path, registries, RAFT_FIRST_CONTACT_WAIT=f"{wait}s")
    started = time.monotonic()
    cluster.start(0)
    cluster.start(1)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes[:2], timeout=wait + 4.0)
        assert time.monotonic() - started >= wait
        await leader_of(session, cluster.nodes[:2])


async def test_health_is_decided_by_the_leader_from_every_replicas_heartbeats(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(
        tmp_path, registries, AGENT_TIMEOUT=AGENT_TIMEOUT_ENV, HEALTH_CHECK_INTERVAL="200ms"
    )
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        leader = await leader_of(session, nodes)
        follower = nodes[(leader + 1) % 3]
        for agent_id in ("alive-1", "silent-1"):
            async with session.post(
                f"{follower.url}/heartbeat", json=agent_body(agent_id, "x")
            ) as resp:
                assert resp.status == 200

        async def silent_marked() -> bool:
            # Only alive-1 keeps heartbeating, and only through a follower.
            await keep_alive(session, follower, "alive-1")
            return (await statuses(session, nodes[leader]))["silent-1"] == "unhealthy"

        await until(silent_marked, timeout=AGENT_TIMEOUT + 15)

        async def alive_still_healthy() -> bool:
            await silent_marked()
            return (await statuses(session, nodes[leader]))["alive-1"] == "healthy"

        # Longer than AGENT_TIMEOUT: the agent heard only by a follower stays healthy.
        await steadily(alive_still_healthy, AGENT_TIMEOUT + 1, every=0.3)
        await converged(session, nodes)


AGENT_TIMEOUT = 5.0
"""AGENT_TIMEOUT of the health tests (before scaling): well above the up to two
LIVENESS_PERIODs (1 s each) a heartbeat seen by a follower takes to reach the leader."""
AGENT_TIMEOUT_ENV = f"{scaled(AGENT_TIMEOUT):g}s"


async def statuses(session: aiohttp.ClientSession, node: Registry) -> dict[str, str]:
    """Each agent's health as ``node`` lists it."""
    listing = await get_json(session, f"{node.url}/agents")
    return {a["id"]: str(a["status"]) for a in listing["agents"]}


async def keep_alive(session: aiohttp.ClientSession, node: Registry, agent_id: str) -> None:
    """One HEAD heartbeat as the SDK sends it; fails if the agent was reported unhealthy
    (410). A 503 (the replica briefly applying entries) only means: try again later."""
    async with session.head(f"{node.url}/heartbeat/{agent_id}") as resp:
        assert resp.status in (200, 503), f"{agent_id} got {resp.status} while heartbeating"


async def members(session: aiohttp.ClientSession, node: Registry) -> list[str]:
    status = await get_json(session, f"{node.url}/api/v1/cluster")
    return sorted(m["id"] for m in status["members"])


async def test_scale_one_to_three_to_two(tmp_path: Path, registries: list[Registry]) -> None:
    """The guide's `kubectl scale` 1 -> 3 live, then down to 2 with `cluster remove`."""
    cluster = Cluster(tmp_path, registries)
    n0, n1, n2 = (cluster.address(i) for i in range(3))
    first = cluster.start(0, REGISTRY_PEERS=n0)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [first])
        assert await register(session, first, "early-1")
        # New pods list the ordinals below them; they find the running cluster and join it.
        cluster.start(1, REGISTRY_PEERS=f"{n0},{n1}")
        await until(lambda: _has_members(session, first, [n0, n1]))
        cluster.start(2, REGISTRY_PEERS=f"{n0},{n1},{n2}")
        await until(lambda: _has_members(session, first, [n0, n1, n2]))
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        assert await register(session, cluster.nodes[2], "late-1")
        # A write acknowledged through one replica is not yet applied on every other one.
        assert {"early-1", "late-1"} <= await agent_ids(
            session, cluster.nodes[1], linearizable=True
        )

        # Scale down: pod 2 goes away. Removing it while pod 1 is also down would leave
        # one reachable member of two: refused rather than losing the quorum silently.
        cluster.nodes[2].stop()
        cluster.nodes[1].kill()
        removal = subprocess_remove(first, n2)
        assert removal.returncode == 1
        assert "less than a majority" in removal.stdout
        cluster.start(1)  # restarts with the membership it last saw, whatever its env says
        await all_ready(session, cluster.nodes[:2])
        removal = subprocess_remove(first, n2)
        assert removal.returncode == 0, removal.stdout + removal.stderr
        await until(lambda: _has_members(session, first, [n0, n1]))
        assert await register(session, cluster.nodes[1], "after-scale-down")
        await converged(session, cluster.nodes[:2])


async def _has_members(session: aiohttp.ClientSession, node: Registry, want: list[str]) -> bool:
    return await members(session, node) == sorted(want)


def subprocess_remove(node: Registry, member: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mcp-mesh-registry cluster remove member`` against ``node``, with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "registry", "cluster", "remove", member, "--url", node.url],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**os.environ, "REGISTRY_PORT": str(node.port), **env},
    )


async def test_node_cut_off_from_majority_serves_stale_reads_refuses_writes(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        assert await register(session, cluster.nodes[0], "before-1")
        await converged(session, cluster.nodes)
        lonely = cluster.nodes[2]
        cluster.nodes[0].kill()
        cluster.nodes[1].kill()

        async def not_ready() -> bool:
            return not await ready(session, lonely)

        await until(not_ready)
        async with session.get(f"{lonely.url}/ready") as resp:
            assert resp.status == 503
            assert "leader" in (await resp.json())["detail"]
        async with session.get(f"{lonely.url}/api/v1/agents") as resp:
            assert resp.status == 200  # still serving its (stale) view, and saying so
            assert resp.headers["X-Registry-Stale"] == "true"
            assert {a["id"] for a in (await resp.json())["agents"]} == {"before-1"}
        async with session.get(f"{lonely.url}/health") as resp:
            assert resp.status == 200
        body = {"id": "during-1", "capabilities": ["c"]}
        async with session.post(f"{lonely.url}/api/v1/agents", json=body) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "registry unavailable"
        # Answers that only look like reads must not come from the stale view either (found by
        # jepsen_like): an unchanged re-registration and a delete of an absent agent.
        again = {"id": "before-1", "capabilities": ["c"], "endpoint": "http://x:1"}
        async with session.post(f"{lonely.url}/api/v1/agents", json=again) as resp:
            assert resp.status == 503
        async with session.delete(f"{lonely.url}/api/v1/agents/never-1") as resp:
            assert resp.status == 503
        async with session.get(f"{lonely.url}/agents?consistency=linearizable") as resp:
            assert resp.status == 503


async def test_wiped_node_rejoins_and_resyncs(tmp_path: Path, registries: list[Registry]) -> None:
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        results = await asyncio.gather(
            *(register(session, cluster.nodes[i % 3], f"agent-{i}") for i in range(40))
        )
        assert all(results)
        leader = await leader_of(session, cluster.nodes)
        victim = (leader + 1) % 3
        cluster.nodes[victim].kill()
        shutil.rmtree(cluster.nodes[victim].data_dir)  # its "PVC" is gone
        assert await register(session, cluster.nodes[leader], "while-wiped")
        cluster.start(victim)
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        ids = await agent_ids(session, cluster.nodes[victim])
        assert {f"agent-{i}" for i in range(40)} | {"while-wiped"} <= ids


async def test_compaction_bounds_the_log_and_installs_snapshots(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries, SNAPSHOT_EVERY="10")
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        for i in range(60):
            assert await register(session, cluster.nodes[i % 3], f"agent-{i}")
        await converged(session, cluster.nodes)

        async def compacted() -> bool:
            sizes = [
                int((await get_json(session, f"{n.url}/api/v1/cluster"))["log_size"])
                for n in cluster.nodes
            ]
            return max(sizes) < 30

        await until(compacted)
        leader = await leader_of(session, cluster.nodes)
        victim = (leader + 1) % 3
        cluster.nodes[victim].kill()
        shutil.rmtree(cluster.nodes[victim].data_dir)
        for i in range(60, 80):
            assert await register(session, cluster.nodes[leader], f"agent-{i}")
        cluster.start(victim)  # too far behind for the log: gets the snapshot
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        want = {f"agent-{i}" for i in range(80)}
        assert want <= await agent_ids(session, cluster.nodes[victim])
        for node in cluster.nodes:
            node.kill()
        cluster.start_all()  # restart from snapshots + dumps + journal tails
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        for node in cluster.nodes:
            assert want <= await agent_ids(session, node)


async def test_a_new_node_started_before_the_cluster_joins_it_later(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A scaled-up pod that starts before the running pods are reachable still joins."""
    cluster = Cluster(tmp_path, registries)
    n0, n1 = cluster.address(0), cluster.address(1)
    early = cluster.start(1, REGISTRY_PEERS=f"{n0},{n1}")
    async with aiohttp.ClientSession() as session:

        async def not_ready() -> bool:
            return not await ready(session, early)

        # Alone, it must not elect itself or claim readiness however long it waits.
        await steadily(not_ready, ELECTIONS, every=0.2)
        first = cluster.start(0, REGISTRY_PEERS=n0)
        await all_ready(session, [first])
        await until(lambda: _has_members(session, first, [n0, n1]), timeout=30)
        await all_ready(session, [first, early])
        assert await register(session, early, "via-late-joiner")
        await converged(session, [first, early])


def connecting_to(port: int) -> set[int]:
    """Local ports of this machine's TCP sockets in SYN_SENT towards ``port`` on 127.0.0.1."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "02" and remote == f"0100007F:{port:04X}":
            found.add(int(local.rpartition(":")[2], 16))
    return found


async def test_a_peer_whose_address_swallows_connects_is_retried_and_reached(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A rescheduled pod's old IP swallows SYNs; the survivors must not wait for the kernel.

    Stand-in for that address: a listener whose accept queue is full, so the kernel drops every
    SYN to that port. A kernel connect retries its SYN only after 1, 3, 7, 15, 31... s (about
    two minutes in all), so a stuck attempt shows up as the same socket still in SYN_SENT
    seconds later; the survivors must instead start fresh attempts (new sockets) that resolve
    the name again, and reach the node as soon as it answers.
    """
    cluster = Cluster(tmp_path, registries)
    # pysyncobj connects from the greater address to the smaller one: the smallest is the node
    # both survivors must reach by themselves.
    late = min(range(3), key=cluster.address)
    port = cluster.raft_ports[late]
    blackhole = socket.socket()
    blackhole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blackhole.bind(("127.0.0.1", port))
    blackhole.listen(0)
    filler = socket.create_connection(("127.0.0.1", port))  # fills the accept queue
    try:
        survivors = [i for i in range(3) if i != late]
        for i in survivors:
            cluster.start(i)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            await all_ready(session, [cluster.nodes[i] for i in survivors])
            assert await register(session, cluster.nodes[survivors[0]], "before-move")
            attempts = await until(lambda: asyncio.sleep(0, connecting_to(port)))
            # Each attempt must be given up after connectionTimeout (1.2 s), not left to the
            # kernel, whose SYN retries keep the same socket in SYN_SENT for about two minutes.
            await until(lambda: asyncio.sleep(0, not attempts & connecting_to(port)), timeout=8)
            filler.close()
            blackhole.close()
            cluster.start(late)
            await all_ready(session, [cluster.nodes[late]], timeout=8)
            assert "before-move" in await agent_ids(session, cluster.nodes[late], linearizable=True)
    finally:
        filler.close()
        blackhole.close()


async def commit_index(session: aiohttp.ClientSession, node: Registry) -> int:
    return int((await get_json(session, f"{node.url}/api/v1/cluster"))["commit_index"])


async def test_unchanged_heartbeats_and_linearizable_reads_append_nothing(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A replica checks it is up to date with a read index, not with an entry in the log."""
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        body = agent_body("steady-1", "date", port=9100)
        async with session.post(f"{nodes[0].url}/heartbeat", json=body) as resp:
            assert resp.status == 200
        await converged(session, nodes)
        before = await commit_index(session, nodes[0])
        for _ in range(10):
            for node in nodes:  # the leader and both followers
                async with session.post(f"{node.url}/heartbeat", json=body) as resp:
                    assert resp.status == 200
                listing = await get_json(session, f"{node.url}/agents?consistency=linearizable")
                assert [a["id"] for a in listing["agents"]] == ["steady-1"]
        assert await commit_index(session, nodes[0]) == before


async def test_a_leader_that_lost_its_followers_answers_no_linearizable_read(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """Paused followers cannot confirm the leader's read index, so it never answers from its
    view; and a leader paused while the others elected a new one and took a write answers
    a linearizable read with that write once resumed, never without it."""
    cluster = Cluster(tmp_path, registries)
    cluster.start_all()
    nodes = cluster.nodes
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await all_ready(session, nodes)
        leader = await leader_of(session, nodes)
        others = [n for i, n in enumerate(nodes) if i != leader]
        for node in others:
            node.pause()
        try:
            url = f"{nodes[leader].url}/agents?consistency=linearizable"
            async with session.get(url) as resp:
                assert resp.status == 503
        finally:
            for node in others:
                node.resume()
        await all_ready(session, nodes)
        old = await leader_of(session, nodes)
        paused = nodes[old]
        paused.pause()
        try:
            survivors = [n for i, n in enumerate(nodes) if i != old]

            async def written() -> bool:
                return await register(session, survivors[0], "while-paused-1")

            await until(written)
        finally:
            paused.resume()

        async def answered_with_the_write() -> bool:
            """Until the resumed node has caught up it may refuse (503); once it answers, the
            answer holds the write it missed, and it must come to answer."""
            async with session.get(f"{paused.url}/agents?consistency=linearizable") as resp:
                if resp.status == 503:
                    return False
                assert resp.status == 200
                ids = {a["id"] for a in (await resp.json())["agents"]}
                assert "while-paused-1" in ids, "a linearizable read missed an acknowledged write"
                return True

        await until(answered_with_the_write)
