"""The peer wire's pieces without a cluster: handshake, frames, message and command encoding,
and the conversion of pre-upgrade journals; none of them ever unpickles."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysyncobj.pickle
import pytest
from pysyncobj.node import TCPNode

from registry.config import ConfigError
from registry.events import CorruptRecord
from replication import codec, commands, legacy, wire
from replication.journal import LmdbJournal
from replication.syncobj import RaftNode, _Applied
from tests.raft_cluster import address, running
from tests.test_replication_units import LEADER, _node

SECRET = wire.Secret.from_key("unit-test-key-0123456789abcdefghij")


class _RunsCode:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _handshake(
    client_secret: wire.Secret = SECRET, server_secret: wire.Secret = SECRET
) -> tuple[wire.Session, wire.Session]:
    client, server = wire.ClientHandshake(client_secret), wire.ServerHandshake(server_secret)
    finish, client_session = client.finish(server.reply(client.hello()))
    return client_session, server.finish(finish)


def test_a_handshake_gives_each_direction_its_own_keys() -> None:
    client, server = _handshake()
    to_server = client.sealer.seal(b"ping")
    assert server.opener.open(to_server[:4], to_server[4:]) == b"ping"
    to_client = server.sealer.seal(b"pong")
    assert client.opener.open(to_client[:4], to_client[4:]) == b"pong"
    with pytest.raises(wire.Refused):  # a frame reflected back to its sender does not open
        client.opener.open(to_server[:4], to_server[4:])
    again, _ = _handshake()
    replayed = again.sealer.seal(b"ping")
    assert replayed[4:] != to_server[4:]  # same counter, same plaintext, other connection


def test_either_side_refuses_a_peer_with_another_key() -> None:
    other = wire.Secret.from_key("another-key-of-the-same-length-0123")
    with pytest.raises(wire.Refused, match="server failed authentication"):
        _handshake(client_secret=other)
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(other)
    server.reply(client.hello())
    with pytest.raises(wire.Refused, match="client failed authentication"):
        server.finish(os.urandom(wire.FINISH_BYTES))


def test_the_servers_proof_is_no_clients_proof() -> None:
    """A stranger who relays a server's REPLY MAC back as its own FINISH is refused."""
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(SECRET)
    reply = server.reply(client.hello())
    with pytest.raises(wire.Refused, match="client failed authentication"):
        server.finish(reply[wire.HELLO_BYTES :])


def test_a_client_refuses_a_reply_in_another_version() -> None:
    client = wire.ClientHandshake(SECRET)
    reply = bytearray(wire.ServerHandshake(SECRET).reply(client.hello()))
    reply[len(wire.MAGIC) + 1] += 1
    with pytest.raises(wire.Refused, match="server speaks wire version 2"):
        client.finish(bytes(reply))


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "ENCRYPTION_KEY is not set"), ("k" * 31, "ENCRYPTION_KEY is too short (31 bytes)")],
)
def test_an_empty_or_short_key_is_refused(key: str, message: str) -> None:
    """The wire applies config.load's rule itself, for a Config built without load()."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        wire.Secret.from_key(key)
    wire.Secret.from_key("k" * 32)


def test_append_entries_decode_as_pysyncobj_built_them() -> None:
    message = {
        "type": "append_entries",
        "term": 3,
        "commit_index": 7,
        "prevLogIdx": 5,
        "prevLogTerm": 2,
        "entries": [(b"\x00record", 6, 3), (b"\x01", 7, 3)],
    }
    assert codec.decode(codec.encode(message)) == message
    status = codec.decode(codec.encode({"self": TCPNode("10.0.0.1:4321"), "leader": None}))
    assert status == {"self": "10.0.0.1:4321", "leader": None}
    with pytest.raises(ValueError, match="not \\[command, index, term\\]"):
        codec.decode(codec.encode({**message, "entries": [["not bytes", 6, 3]]}))


def test_decoding_builds_no_objects(tmp_path: Path) -> None:
    proof = tmp_path / "unpickled"
    with pytest.raises(ValueError):
        codec.decode(pickle.dumps(_RunsCode(proof)))
    with pytest.raises(ValueError, match="extension type"):
        codec.decode(b"\xd4\x01\x00")  # msgpack fixext 1
    with pytest.raises(TypeError):
        codec.encode({"type": "x", "value": object()})
    assert not proof.exists()


def test_the_largest_append_entries_fits_one_frame() -> None:
    """A batch of the smallest entries up to the budget, then the largest record."""
    below_budget = (commands.BATCH_BYTES - 1) // (1 + commands.ENTRY_OVERHEAD)
    tiny = [(b"\x01", i, 1) for i in range(below_budget)]
    largest = (b"\x00" + b"r" * commands.MAX_RECORD, below_budget, 1)
    batch = commands.batch([*tiny, largest, *tiny[:10]], commands.BATCH_BYTES)
    assert batch[-1] is largest  # the budget is crossed by the largest entry
    message = {
        "type": "append_entries",
        "term": 2**40,
        "commit_index": 2**40,
        "prevLogIdx": 2**40,
        "prevLogTerm": 2**40,
        "entries": batch,
    }
    assert len(codec.encode(message)) <= wire.MAX_FRAME
    assert 1 + commands.MAX_RECORD < commands.BATCH_BYTES  # never pysyncobj's chunked path


def test_membership_commands_are_msgpack_and_malformed_ones_change_nothing(
    tmp_path: Path,
) -> None:
    command = bytes([commands.MEMBERSHIP]) + commands.membership("add", "10.0.0.1:4321")
    assert commands.parse_membership(command) == ["add", "10.0.0.1:4321"]
    with pytest.raises(ValueError):
        commands.membership("add", "no-port")
    proof = tmp_path / "unpickled"
    pickled = bytes([commands.MEMBERSHIP]) + pickle.dumps(["add", "x:1", _RunsCode(proof)])
    assert commands.parse_membership(pickled) is None
    assert commands.parse_membership(bytes([commands.MEMBERSHIP]) + b"\x92\xa3add\x01") is None
    assert commands.record_of(b"\x00") is None  # a barrier
    assert commands.record_of(b"\x00abc") == b"abc"
    assert not proof.exists()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[RaftNode, list[tuple[int, bytes]]]]:
    journal = LmdbJournal(str(tmp_path / "raft"))
    delivered: list[tuple[int, bytes]] = []

    def deliver(index: int, record: bytes) -> _Applied:
        delivered.append((index, record))
        return _Applied(index)

    raft = _node(tmp_path, journal, deliver)
    try:
        yield raft, delivered
    finally:
        raft.destroy()
        journal._destroy()


def test_committed_commands_are_applied_without_unpickling(node: Any, tmp_path: Path) -> None:
    raft, delivered = node
    proof = tmp_path / "unpickled"
    evil = pickle.dumps(_RunsCode(proof))
    assert raft._SyncObj__doApplyCommand(bytes([commands.MEMBERSHIP]) + evil) is None
    assert raft._SyncObj__doApplyCommand(bytes([3]) + evil) is None  # pysyncobj's VERSION
    assert raft._SyncObj__doApplyCommand(b"\x00" + evil).index == 2
    assert delivered == [(2, evil)]  # handed over as bytes, for events.decode to refuse
    assert not proof.exists()


def test_a_chunked_append_entries_is_dropped_unread(node: Any, tmp_path: Path) -> None:
    """pysyncobj unpickles the chunks of its "transmission" once the last one arrives."""
    raft, _ = node
    proof = tmp_path / "unpickled"
    evil = pickle.dumps((_RunsCode(proof), 2, 1))
    raft._SyncObj__transport.send = lambda *_: True
    for step, data in (("start", evil[:10]), ("finish", evil[10:])):
        message = {
            "type": "append_entries",
            "transmission": step,
            "data": data,
            "term": 1,
            "commit_index": 1,
            "prevLogIdx": 1,
            "prevLogTerm": 0,
        }
        raft._SyncObj__onMessageReceived(LEADER, message)
    assert not proof.exists()
    assert raft.journal.last_index == 1


def _old(call: Any) -> bytes:
    """A command body as pysyncobj pickled it before this wire."""
    return bytes(pysyncobj.pickle.dumps(call))


OLD = [
    (b"\x00" + _old((0, (b"\x00\xff record",))), b"\x00\x00\xff record"),
    (b"\x00" + _old((0, (b"",))), b"\x00"),
    (
        b"\x02" + _old(["add", "10.0.0.2:4321", TCPNode("10.0.0.2:4321")]),
        b"\x02" + commands.membership("add", "10.0.0.2:4321"),
    ),
    (b"\x01", b"\x01"),
]


@pytest.mark.parametrize(("before", "after"), OLD)
def test_pre_upgrade_commands_convert_without_unpickling(before: bytes, after: bytes) -> None:
    assert legacy.convert(before) == after


def test_a_pre_upgrade_command_of_another_shape_is_refused(tmp_path: Path) -> None:
    proof = tmp_path / "unpickled"
    with pytest.raises(CorruptRecord, match="unknown shape"):
        legacy.convert(b"\x00" + _old((0, (_RunsCode(proof),))))
    with pytest.raises(CorruptRecord, match="unknown shape"):
        legacy.convert(b"\x00" + _old(_RunsCode(proof)))
    assert not proof.exists()


def test_a_pre_upgrade_journal_is_converted_once(tmp_path: Path) -> None:
    path = str(tmp_path / "raft")
    journal = LmdbJournal(path)
    for index, (before, _) in enumerate(OLD, 1):
        journal.add(before, index, 1)
    journal._destroy()
    legacy.upgrade_journal(path)
    legacy.upgrade_journal(path)  # marked: the second start converts nothing again
    converted = LmdbJournal(path)
    try:
        assert [entry[0] for entry in converted[:]] == [after for _, after in OLD]
    finally:
        converted._destroy()


@pytest.mark.parametrize(
    "malformed", [{"type": "request_vote"}, {"type": "apply_command"}, {"type": "append_entries"}]
)
def test_a_malformed_message_from_a_member_costs_its_connection_not_the_tick(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    malformed: dict[str, Any],
) -> None:
    """Only a key holder gets this far, but pysyncobj's handlers index fields without checking
    them: a message of the wrong shape closes that connection (which is then made again) and
    the receiving node's tick goes on, so the cluster still commits."""
    with running(tmp_path, monkeypatch) as cluster:
        leader = cluster.calm()
        follower = cluster.others(leader)[0]
        assert cluster.send(follower, leader, malformed)
        cluster.run_until(lambda: "closed: malformed message" in caplog.text, leader)
        cluster.run_until(lambda: leader.isNodeConnected(TCPNode(address(follower))))
        cluster.write(leader)
