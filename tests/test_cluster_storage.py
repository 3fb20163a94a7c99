"""What a Raft node does with damaged files on its disk, and its SQLite projection after a
snapshot install: real registry processes, real LMDB environments opened with the lmdb module."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import lmdb
import pytest

from replication import commands
from tests.conftest import eventually
from tests.processes import Registry
from tests.test_cluster import Cluster, all_ready, converged, get_json, leader_of, register
from tests.timing import scaled

pytestmark = pytest.mark.slow


@contextmanager
def lmdb_db(path: Path, name: bytes) -> Iterator[tuple[lmdb.Environment, lmdb._Database]]:
    """A stopped node's LMDB environment at ``path`` and its named database, for surgery."""
    env = lmdb.open(str(path), max_dbs=4, subdir=True, create=False)
    try:
        yield env, env.open_db(name, create=False)
    finally:
        env.close()


def flip_last_byte(data: bytes) -> bytes:
    """The same bytes with the last one changed: same length, wrong checksum."""
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def corrupt_journal_record(node: Registry) -> int:
    """Damage the newest replicated event in ``node``'s Raft journal; return its log index.

    A journal value is the entry's term (8 bytes) and the command: a type byte and, for a
    regular command, the event record itself (``replication/commands.py``). Only the record's
    own bytes change, so the command still reads as one and hands the record over.
    """
    journal = node.data_dir / "raft"
    with lmdb_db(journal, b"raft_entries") as (env, db), env.begin(write=True) as txn:
        for key, value in reversed(list(txn.cursor(db=db))):
            record = commands.record_of(bytes(value[8:]))
            if record is None:
                continue  # a no-op, membership or barrier entry
            txn.put(key, value[:9] + flip_last_byte(record), db=db)
            return int.from_bytes(key, "big")
    raise AssertionError("no replicated event in the journal")


def corrupt_newest_snapshot(node: Registry) -> int:
    """Damage ``node``'s newest view snapshot in its store; return the index it covers."""
    with lmdb_db(node.data_dir / "lmdb", b"snapshots") as (env, db), env.begin(write=True) as txn:
        cursor = txn.cursor(db=db)
        assert cursor.last(), "no snapshot written"
        key, value = cursor.key(), cursor.value()
        txn.put(key, flip_last_byte(value), db=db)
        return int.from_bytes(key, "big")


def exit_status(node: Registry, seconds: float) -> int:
    """Wait for a node that must stop on its own; its exit status."""
    assert node.proc is not None
    try:
        return node.proc.wait(timeout=scaled(seconds))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running: {node.log()[-2000:]}") from None


async def single_node_with_history(cluster: Cluster, agents: int) -> Registry:
    """A one-member Raft cluster that committed ``agents`` registrations, then stopped cleanly."""
    node = cluster.start(0)
    async with aiohttp.ClientSession() as session:
        await all_ready(session, [node])
        for i in range(agents):
            assert await register(session, node, f"agent-{i}")
    assert node.stop() == 0
    return node


async def test_a_corrupt_replicated_record_stops_the_node_naming_its_index(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """Replaying its journal at startup, the node meets a record whose checksum fails: it must
    stop (non-zero) and say which index, never skip the entry and serve a view without it."""
    cluster = Cluster(tmp_path, registries, n=1)
    node = await single_node_with_history(cluster, 5)
    index = corrupt_journal_record(node)
    before = len(node.log())
    node.launch()
    assert exit_status(node, 20) != 0
    log = node.log()[before:]
    assert f"corrupt record at log index {index}: checksum mismatch" in log
    assert '"msg":"corrupt replicated record; stopping"' in log


async def test_a_corrupt_snapshot_stops_the_node_naming_its_index(
    tmp_path: Path, registries: list[Registry]
) -> None:
    cluster = Cluster(tmp_path, registries, n=1, SNAPSHOT_EVERY="5")
    node = await single_node_with_history(cluster, 12)
    index = corrupt_newest_snapshot(node)
    before = len(node.log())
    node.launch()
    assert exit_status(node, 20) != 0
    assert f"corrupt record at log index {index}: snapshot checksum mismatch" in node.log()[before:]


async def test_a_corrupt_dump_stops_the_node(tmp_path: Path, registries: list[Registry]) -> None:
    """The Raft dump (snapshot + records after it) is what the log was compacted to: without
    it the journal's first entries are missing, so the node must stop, naming the file."""
    cluster = Cluster(tmp_path, registries, n=1, SNAPSHOT_EVERY="5")
    node = await single_node_with_history(cluster, 12)
    dump = node.data_dir / "raft" / "dump.bin"
    dump.write_bytes(flip_last_byte(dump.read_bytes()))
    before = len(node.log())
    node.launch()
    assert exit_status(node, 20) != 0
    assert f"raft dump {dump} checksum mismatch" in node.log()[before:]


def projected(node: Registry) -> dict[str, tuple[str, str]]:
    """``node``'s SQLite projection as the guide's ``SELECT * FROM agents`` shows it."""
    with sqlite3.connect(node.data_dir / "registry.db") as db:
        rows = db.execute("SELECT agent_id, status, http_host, http_port FROM agents").fetchall()
    return {agent_id: (status, f"http://{host}:{port}") for agent_id, status, host, port in rows}


async def listed(session: aiohttp.ClientSession, node: Registry) -> dict[str, tuple[str, str]]:
    listing = await get_json(session, f"{node.url}/api/v1/agents")
    return {a["id"]: (a["status"], a["endpoint"]) for a in listing["agents"]}


async def test_the_sqlite_projection_of_a_follower_that_installed_a_snapshot(
    tmp_path: Path, registries: list[Registry]
) -> None:
    """A follower that was down while agents left, changed and arrived, and came back too far
    behind for the log, gets the leader's snapshot: its ``agents`` table must then hold
    exactly the leader's agents, not the rows of the view it had before."""
    cluster = Cluster(tmp_path, registries, SNAPSHOT_EVERY="10", DATABASE_TYPE="sqlite")
    cluster.start_all()
    async with aiohttp.ClientSession() as session:
        await all_ready(session, cluster.nodes)
        for i in range(20):
            assert await register(session, cluster.nodes[i % 3], f"agent-{i}")
        await converged(session, cluster.nodes)
        leader = cluster.nodes[await leader_of(session, cluster.nodes)]
        behind = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
        lagging = cluster.nodes[behind]
        await eventually(lambda: len(projected(lagging)) == 20)
        lagging.kill()
        for i in range(8):
            async with session.delete(f"{leader.url}/api/v1/agents/agent-{i}") as resp:
                assert resp.status == 200
        moved = {"id": "agent-10", "capabilities": ["c"], "endpoint": "http://moved:2"}
        async with session.post(f"{leader.url}/api/v1/agents", json=moved) as resp:
            assert resp.status == 200
        for i in range(20, 45):
            assert await register(session, leader, f"agent-{i}")
        before = len(lagging.log())
        lagging = cluster.start(behind)
        await all_ready(session, cluster.nodes)
        await converged(session, cluster.nodes)
        assert '"msg":"snapshot installed"' in lagging.log()[before:], "caught up from the log"
        want = await listed(session, leader)
        assert len(want) == 37 and want["agent-10"][1] == "http://moved:2"
        await eventually(lambda: projected(lagging) == want)
        assert projected(leader) == want
