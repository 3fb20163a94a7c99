"""DATABASE_TYPE=postgresql with real registry processes on a real PostgreSQL server
(tests/postgres.py): one replica, three replicas on one database, a decider killed, the
database killed under writes, a replica cut off from it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import agent_body, steadily
from tests.pg_replicas import FAST, replica
from tests.postgres import Postgres
from tests.processes import Registry
from tests.test_backup import cli
from tests.test_cluster import (
    AGENT_TIMEOUT,
    AGENT_TIMEOUT_ENV,
    agent_ids,
    all_ready,
    converged,
    get_json,
    keep_alive,
    ready,
    register,
    statuses,
    until,
)
from tests.timing import scaled

pytestmark = pytest.mark.slow


async def cluster(session: aiohttp.ClientSession, nodes: list[Registry]) -> list[dict[str, Any]]:
    return [await get_json(session, f"{n.url}/api/v1/cluster") for n in nodes]


async def deciders(session: aiohttp.ClientSession, nodes: list[Registry]) -> list[int]:
    return [i for i, s in enumerate(await cluster(session, nodes)) if s["role"] == "decider"]


async def decider_gauge(session: aiohttp.ClientSession, node: Registry) -> float:
    async with session.get(f"http://127.0.0.1:{node.metrics_port}/metrics") as resp:
        text = await resp.text()
    (line,) = [line for line in text.splitlines() if line.startswith("mcp_registry_decider ")]
    return float(line.split()[1])


async def test_single_replica_writes_reads_and_restarts_from_the_database(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    node = replica(tmp_path, postgres, 0)
    registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [node])
        assert await register(session, node, "pg-agent")
        async with session.get(f"{node.url}/api/v1/agents/pg-agent") as resp:
            assert resp.status == 200
            index = int(resp.headers["X-Registry-Applied-Index"])
        assert index >= 1
        assert postgres.psql("SELECT count(*) FROM mesh_registry_log") == str(index)
        node.stop()
        node.start()
        await all_ready(session, [node])
        assert await agent_ids(session, node) == {"pg-agent"}
        status = (await cluster(session, [node]))[0]
        assert status["mode"] == "postgresql" and status["applied_index"] == index
        assert status["synchronous_commit"] == "on"  # the server's default: flushed WAL


async def test_three_replicas_share_one_log_and_one_decider(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    nodes = [replica(tmp_path, postgres, i) for i in range(3)]
    for node in nodes:
        registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        for i in range(30):
            assert await register(session, nodes[i % 3], f"agent-{i}")
        expected = {f"agent-{i}" for i in range(30)}
        for node in nodes:  # a linearizable read through any replica sees every write
            assert await agent_ids(session, node, linearizable=True) == expected
        await converged(session, nodes)  # same view digest and applied index everywhere

        async def one_decider() -> bool:
            return len(await deciders(session, nodes)) == 1

        await until(one_decider)
        await steadily(one_decider, 2)  # and it stays one (retries at 200 ms find it held)
        first = (await deciders(session, nodes))[0]
        old_term = (await cluster(session, nodes))[first]["term"]
        nodes[first].kill()
        rest = [n for i, n in enumerate(nodes) if i != first]

        async def taken_over() -> bool:
            return len(await deciders(session, rest)) == 1

        await until(taken_over)
        statuses = await cluster(session, rest)
        new = next(s for s in statuses if s["role"] == "decider")
        assert new["term"] > old_term

        async def everyone_names_it() -> bool:  # learnt at the next poll of the head row
            return all(s["leader"] == new["node_id"] for s in await cluster(session, rest))

        await until(everyone_names_it)
        deciding = [await decider_gauge(session, n) for n in rest]  # RegistryNoDecider's input
        assert sorted(deciding) == [0.0, 1.0]
        assert await register(session, rest[0], "after-failover")
        assert "after-failover" in await agent_ids(session, rest[1], linearizable=True)


async def test_health_is_decided_by_the_decider_from_every_replicas_heartbeats(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """HEADs reach a replica that does not decide: their ids reach the decider by NOTIFY, so
    the agent stays healthy, while one nobody hears from is marked unhealthy."""
    env = {"AGENT_TIMEOUT": AGENT_TIMEOUT_ENV, "HEALTH_CHECK_INTERVAL": "200ms"}
    nodes = [replica(tmp_path, postgres, i, **env) for i in range(2)]
    for node in nodes:
        registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)

        async def one_decider() -> list[int]:
            found = await deciders(session, nodes)
            return found if len(found) == 1 else []

        decider = (await until(one_decider))[0]
        other = nodes[1 - decider]
        for agent_id in ("alive-1", "silent-1"):
            async with session.post(f"{other.url}/heartbeat", json=agent_body(agent_id, "x")) as r:
                assert r.status == 200

        async def silent_marked() -> bool:
            await keep_alive(session, other, "alive-1")
            # .get: the decider may not have applied the registration yet (it came in through
            # the other replica and reaches the decider's view by NOTIFY or its next poll).
            return (await statuses(session, nodes[decider])).get("silent-1") == "unhealthy"

        await until(silent_marked, timeout=AGENT_TIMEOUT + 15)

        async def alive_still_healthy() -> bool:
            await silent_marked()
            return (await statuses(session, nodes[decider]))["alive-1"] == "healthy"

        await steadily(alive_still_healthy, AGENT_TIMEOUT + 1, every=0.3)
        await converged(session, nodes)


async def test_database_killed_and_restarted_under_writes_loses_no_acknowledged_write(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """Every 200 is in the log after the restart; every failure is a 503 (never a 5xx of
    another kind, never a hang past WRITE_TIMEOUT) saying whether it is certainly not committed
    (failed before COMMIT, or never sent) or of unknown outcome (COMMIT unconfirmed)."""
    nodes = [replica(tmp_path, postgres, i) for i in range(2)]
    for node in nodes:
        registries.append(node.start())
    acknowledged: list[str] = []
    failures: list[tuple[int, str]] = []
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)

        async def writer(w: int) -> None:
            for n in range(400):
                if stop.is_set():
                    return
                agent_id = f"w{w}-{n}"
                body = {"id": agent_id, "capabilities": ["c"], "endpoint": "http://x:1"}
                started = time.monotonic()
                async with session.post(f"{nodes[w % 2].url}/api/v1/agents", json=body) as resp:
                    if resp.status == 200:
                        acknowledged.append(agent_id)
                    else:
                        failures.append((resp.status, await resp.text()))
                        await asyncio.sleep(0.05)  # a client's back-off, not synchronization
                assert time.monotonic() - started < scaled(10)

        stop = asyncio.Event()
        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        await until(lambda: len(acknowledged) >= 20)
        await asyncio.to_thread(postgres.stop, "immediate")
        await until(lambda: len(failures) >= 4)
        await asyncio.to_thread(postgres.start)
        count = len(acknowledged)
        await until(lambda: len(acknowledged) >= count + 20, timeout=30)
        stop.set()
        await asyncio.gather(*writers)
        await all_ready(session, nodes)
        for node in nodes:
            assert set(acknowledged) <= await agent_ids(session, node, linearizable=True)
    assert failures and {status for status, _ in failures} == {503}, failures[:5]
    reasons = ("outcome unknown", "not committed", "unreachable")
    assert all(any(r in text for r in reasons) for _, text in failures), failures


async def test_replica_without_its_database_is_not_ready_and_refuses_writes(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    node = replica(tmp_path, postgres, 0)
    registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [node])
        await asyncio.to_thread(postgres.stop, "immediate")

        async def not_ready() -> bool:
            return not await ready(session, node)

        await until(not_ready)
        async with session.get(f"{node.url}/ready") as resp:
            reason = await resp.text()
        assert "unreachable" in reason, reason
        body = {"id": "refused", "capabilities": ["c"], "endpoint": "http://x:1"}
        async with session.post(f"{node.url}/api/v1/agents", json=body) as resp:
            assert resp.status == 503
        assert "postgresql log unavailable" in node.log()
        await asyncio.to_thread(postgres.start)
        await all_ready(session, [node], timeout=30)
        assert await register(session, node, "back")


async def test_a_replica_paused_under_writes_does_not_stop_the_others_writes(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """Review finding H2: an append used to hold the head row's lock across five round trips,
    so a replica paused (SIGSTOP) inside one blocked every replica's writes for as long as it
    stayed paused. Paused six times while four clients keep it busy appending, the other
    replica's writes still commit within their WRITE_TIMEOUT each time."""
    busy, other = (replica(tmp_path, postgres, i) for i in range(2))
    for node in (busy, other):
        registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [busy, other])
        stop = asyncio.Event()

        async def load(w: int) -> None:
            n = 0
            while not stop.is_set():
                await register(session, busy, f"busy-{w}-{n}")
                n += 1

        loads = [asyncio.create_task(load(w)) for w in range(4)]
        try:
            for round_ in range(6):
                await until(lambda: asyncio.to_thread(busy_appending, postgres))
                await asyncio.to_thread(busy.pause)
                try:
                    assert await register(session, other, f"other-{round_}"), round_
                finally:
                    busy.resume()
        finally:
            stop.set()
            await asyncio.gather(*loads)
        await converged(session, [busy, other])


def busy_appending(postgres: Postgres) -> bool:
    """replica-0's writer has an append in flight or just had one (it is in the middle of its
    work, not idle between requests)."""
    return (
        postgres.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'mesh-registry replica-0 writer' AND state_change > now() - interval '50 milliseconds'"
        )
        != "0"
    )


async def test_a_paused_decider_gives_way_and_a_paused_replica_stops_listening(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """A paused process answers TCP keepalives from its kernel, so only the server's
    ``idle_session_timeout`` (an idle session) and ``tcp_user_timeout`` (one it is blocked
    writing to) end its sessions: without them a paused decider kept the lock (no health
    decisions anywhere, for ever) and a paused reader kept its LISTEN (pinning the
    notification queue until appends fail). Resumed, it rejoins as an ordinary replica."""
    nodes = [replica(tmp_path, postgres, i) for i in range(2)]
    for node in nodes:
        registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)

        async def one_decider(among: list[Registry]) -> list[int]:
            found = await deciders(session, among)
            return found if len(found) == 1 else []

        decider = (await until(lambda: one_decider(nodes)))[0]
        paused, other = nodes[decider], nodes[1 - decider]
        name = f"replica-{decider}"
        await asyncio.to_thread(paused.pause)
        try:
            # ~20 MB of notifications: the server blocks writing them to the paused reader's
            # full socket, where idle_session_timeout cannot end it (tcp_user_timeout does)
            postgres.psql(
                "SELECT count(pg_notify('mesh_registry_log', i || repeat('x', 7000))) "
                "FROM generate_series(1, 3000) AS i"  # distinct: equal ones are sent once
            )
            await until(lambda: one_decider([other]), timeout=scaled(30))

            async def only_the_writer_left() -> bool:
                names = await asyncio.to_thread(
                    postgres.psql,
                    "SELECT string_agg(application_name, ',' ORDER BY application_name) "
                    f"FROM pg_stat_activity WHERE application_name LIKE 'mesh-registry {name} %'",
                )
                return names == f"mesh-registry {name} writer"

            # the writer holds nothing while idle and may stay; reader and decider may not
            await until(only_the_writer_left, timeout=scaled(30))
            assert await register(session, other, "while-paused")
        finally:
            paused.resume()

        async def caught_up() -> bool:
            # resumed, it answers at once, then finds its sessions ended and reconnects
            url = f"{paused.url}/api/v1/agents?consistency=linearizable"
            async with session.get(url) as resp:
                if resp.status != 200:
                    return False
                return "while-paused" in {agent["id"] for agent in (await resp.json())["agents"]}

        await until(caught_up, timeout=30)
        await all_ready(session, nodes, timeout=30)
        await steadily(lambda: one_decider(nodes), 1)
        assert (await until(lambda: one_decider(nodes)))[0] == 1 - decider


GUIDE_INDEXES = """
CREATE INDEX idx_agents_capability ON agents(capability);
CREATE INDEX idx_agents_last_seen ON agents(last_seen);
"""
"""The guide's Troubleshooting commands, as it runs them in psql."""


async def test_the_agents_table_follows_the_view_through_a_decider_failover(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """One row per agent (its capabilities, status, last_seen, endpoint, namespace and
    registration), written by the decider from what every replica applied: registrations
    through either replica, a health decision, a removal, and after the decider is killed the
    new one's writes. The guide's CREATE INDEX commands work on it."""
    env = {"AGENT_TIMEOUT": AGENT_TIMEOUT_ENV, "HEALTH_CHECK_INTERVAL": "200ms"}
    nodes = [replica(tmp_path, postgres, i, **env) for i in range(2)]
    for node in nodes:
        registries.append(node.start())

    def table() -> str:
        return postgres.psql(
            "SELECT string_agg(concat_ws(' ', id, array_to_string(capability, ','), status, "
            "endpoint, namespace, registration->>'name'), '; ' ORDER BY id) FROM agents"
        )

    async def shows(expected: str) -> bool:
        return await asyncio.to_thread(table) == expected

    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        postgres.psql(GUIDE_INDEXES)
        for i, (agent_id, capability) in enumerate((("alive", "date"), ("silent", "time"))):
            body = agent_body(agent_id, capability, port=9000 + i, namespace="ops")
            async with session.post(f"{nodes[i].url}/heartbeat", json=body) as resp:
                assert resp.status == 200, await resp.text()
        alive = "alive date healthy http://127.0.0.1:9000 ops alive"
        await until(lambda: shows(f"{alive}; silent time healthy http://127.0.0.1:9001 ops silent"))

        async def marked_while_the_other_beats() -> bool:
            await keep_alive(session, nodes[1], "alive")
            return await shows(f"{alive}; silent time unhealthy http://127.0.0.1:9001 ops silent")

        await until(marked_while_the_other_beats, timeout=AGENT_TIMEOUT + 15)
        seen = postgres.psql(
            "SELECT string_agg(id, ',' ORDER BY last_seen DESC) FROM agents "
            "WHERE last_seen > now() - interval '1 hour'"
        )
        assert seen == "alive,silent"  # the heartbeats reached last_seen, the silent one's did not
        async with session.delete(f"{nodes[0].url}/agents/silent") as resp:
            assert resp.status in (200, 204), await resp.text()
        await until(lambda: shows(alive))
        decider = (await until(lambda: one_decider(session, nodes)))[0]
        nodes[decider].kill()
        rest = nodes[1 - decider]
        await until(lambda: one_decider(session, [rest]), timeout=scaled(20))
        async with session.post(f"{rest.url}/heartbeat", json=agent_body("late", "x")) as resp:
            assert resp.status == 200
        await until(lambda: shows(f"{alive}; late x healthy http://127.0.0.1:9000 default late"))
        explain = postgres.psql(
            "SET enable_seqscan = off; EXPLAIN SELECT id FROM agents WHERE last_seen > now()"
        )
        assert "idx_agents_last_seen" in explain  # the guide's index is used


async def one_decider(session: aiohttp.ClientSession, among: list[Registry]) -> list[int]:
    found = await deciders(session, among)
    return found if len(found) == 1 else []


async def test_snapshots_compact_the_log_and_replicas_start_or_catch_up_from_them(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """With SNAPSHOT_EVERY=20 the decider snapshots the view into the database and the log
    is kept only from the older of the two newest snapshots on. A replica paused while the
    log moves past its position installs the newest snapshot when it resumes; a new replica
    starts from it; every replica ends with the same view."""
    env = {"SNAPSHOT_EVERY": "20"}
    nodes = [replica(tmp_path, postgres, i, **env) for i in range(2)]
    for node in nodes:
        registries.append(node.start())
    async with aiohttp.ClientSession() as session:
        await all_ready(session, nodes)
        for i in range(10):
            assert await register(session, nodes[i % 2], f"before-{i}")
        decider = (await until(lambda: one_decider(session, nodes)))[0]
        lagging = nodes[1 - decider]
        await converged(session, nodes)
        await asyncio.to_thread(lagging.pause)
        try:
            for i in range(90):
                assert await register(session, nodes[decider], f"while-paused-{i}")

            def compacted() -> bool:
                low, snapshots = postgres.psql(
                    "SELECT (SELECT min(idx) FROM mesh_registry_log) || ' ' || "
                    "(SELECT count(*) FROM mesh_registry_snapshot)"
                ).split()
                return int(low) > 11 and snapshots == "2"  # its position (10) is gone

            await until(lambda: asyncio.to_thread(compacted))
        finally:
            lagging.resume()
        fresh = replica(tmp_path, postgres, 2, **env)
        registries.append(fresh.start())
        nodes.append(fresh)
        await all_ready(session, nodes)
        expected = {f"before-{i}" for i in range(10)} | {f"while-paused-{i}" for i in range(90)}
        for node in nodes:
            assert await agent_ids(session, node, linearizable=True) == expected
        await converged(session, nodes)
        assert "snapshot installed" in lagging.log()
        assert "snapshot installed" in fresh.log()
        assert "snapshot written" in nodes[decider].log()


async def test_backup_then_restore_into_an_empty_database(
    tmp_path: Path, postgres: Postgres, registries: list[Registry]
) -> None:
    """``backup`` through a replica, ``restore`` into a second database (refused into a
    database whose log was written to), replicas started on it serve the backup's agents and
    go on writing after the backup's index."""
    source = replica(tmp_path, postgres, 0, SNAPSHOT_EVERY="5")
    registries.append(source.start())
    backup_file = tmp_path / "registry.backup"
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [source])
        for i in range(12):
            assert await register(session, source, f"kept-{i}")
        made = cli("backup", "--out", str(backup_file), "--url", source.url)
        assert made.returncode == 0, made.stderr
        refused = cli("restore", "--from", str(backup_file), **postgres.env)
        assert refused.returncode == 1
        assert "the database log is not empty" in refused.stderr, refused.stderr
        postgres.psql("CREATE DATABASE restored OWNER mcpmesh")
        into = {**postgres.env, "DATABASE_NAME": "restored"}
        done = cli("restore", "--from", str(backup_file), **into)
        assert done.returncode == 0, done.stderr
        assert "restored applied index 12 (12 agents)" in done.stdout, done.stdout
        again = cli("restore", "--from", str(backup_file), **into)
        assert again.returncode == 1 and "not empty" in again.stderr, again.stderr
        nodes = [
            Registry(tmp_path / f"restored-{i}", **into, **FAST, REGISTRY_INSTANCE_ID=f"rr-{i}")
            for i in range(2)
        ]
        for node in nodes:
            registries.append(node.start())
        await all_ready(session, nodes)
        assert await register(session, nodes[1], "after-restore")
        expected = {f"kept-{i}" for i in range(12)} | {"after-restore"}
        for node in nodes:
            assert await agent_ids(session, node, linearizable=True) == expected
        await converged(session, nodes)
        async with session.get(f"{nodes[0].url}/api/v1/agents/after-restore") as resp:
            assert int(resp.headers["X-Registry-Applied-Index"]) == 13
