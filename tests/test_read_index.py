"""The ReadIndex protocol (replication/read_index.py) on three real RaftNodes over loopback.

The nodes are ticked by the test (tests/raft_cluster.py): a paused node is one not ticked, so
which probes, acknowledgements and replies a node has read when it decides is the test's to
set up, and every message goes over the nodes' real TCP connections. A message a real peer
would never send (a stale or malformed one) is written by a real node onto its connection.
Where a rule must act before a read's give-up time, the test lengthens GIVE_UP_AFTER, so that
only the rule under test can answer the read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import FAIL_REASON
from pysyncobj.monotonic import monotonic
from pysyncobj.node import TCPNode

from registry.commit import StateMachine, restore_view
from registry.config import Config
from registry.health import Liveness
from registry.store import Store
from replication import read_index
from replication.peers import Peers
from replication.proposer import RaftProposer
from replication.read_index import GIVE_UP_AFTER, PROBE, PROBE_ACK, REFUSED, REPLY, REQUEST
from replication.syncobj import RaftNode
from tests.ports import free_port
from tests.raft_cluster import Cluster, address, running
from tests.timing import scaled


@dataclass
class Answer:
    index: Any
    error: int
    applied: int
    """The asking node's last applied index when the answer came."""
    at: float


def ask(node: RaftNode) -> list[Answer]:
    """Request a read index on ``node``; the list receives its answer."""
    answers: list[Answer] = []

    def answer(index: Any, error: int) -> None:
        answers.append(Answer(index, error, node.raftLastApplied, monotonic()))

    node.read_index.request(answer)
    return answers


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with running(tmp_path, monkeypatch) as made:
        yield made


@pytest.fixture
def no_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads are not refused for being old: a refusal must come from the rule under test."""
    monkeypatch.setattr(read_index, "GIVE_UP_AFTER", scaled(600))


def sent_since(cluster: Cluster, mark: int, sender: RaftNode, kind: str) -> list[dict[str, Any]]:
    return [
        f.message for f in cluster.frames[mark:] if f.sender is sender and f.message["type"] == kind
    ]


def read_indexed(cluster: Cluster, leader: RaftNode) -> dict[str, Any]:
    """Tick ``leader`` alone until it has probed for a read just asked of it; the probe."""
    mark = len(cluster.frames)
    probes = cluster.run_until(lambda: sent_since(cluster, mark, leader, PROBE), leader)
    return probes[0]


def drain(cluster: Cluster, reader: RaftNode, *senders: RaftNode) -> None:
    """Tick ``reader`` until it has read every frame ``senders`` wrote to it so far: each
    sends a probe behind them on its connection, and ``reader`` acknowledges it once read."""
    markers = {}
    for seq, sender in enumerate(senders, start=-len(senders)):
        cluster.send(sender, reader, {"type": PROBE, "term": reader.raftCurrentTerm, "seq": seq})
        markers[seq] = sender
    mark = len(cluster.frames)
    cluster.run_until(
        lambda: {m["seq"] for m in sent_since(cluster, mark, reader, PROBE_ACK)} >= set(markers),
        reader,
    )
    cluster.tick(reader)  # answers decided on what was read are given at the next tick


def transfer(cluster: Cluster, leader: RaftNode, to: RaftNode) -> None:
    """Ask ``leader`` to hand over to ``to`` (Raft's TimeoutNow), once it knows ``to`` holds
    its whole log (pysyncobj refuses before)."""

    def handed_over() -> bool:
        result: list[int] = []
        leader.transferLeadership(address(to), callback=lambda _, error: result.append(error))
        return result == [FAIL_REASON.SUCCESS]

    cluster.run_until(handed_over, leader, to)


def disconnect(node: RaftNode, peer: RaftNode) -> None:
    """Close ``node``'s TCP connection to ``peer`` (pysyncobj reconnects on its own)."""
    assert node.transport is not None
    node.transport._connections[TCPNode(address(peer))].disconnect()


# -- the rules a read's answer follows -------------------------------------------------------


def test_a_follower_takes_the_reply_only_from_the_leader_it_asked(cluster: Cluster) -> None:
    """A reply with the right id from another member, or from the leader with another id,
    must not answer a read: after a restart the leader may still owe the node's previous
    incarnation a reply with an older index."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f1)}
    written = cluster.write(leader)  # f1 has not applied it
    answers = ask(f1)
    mark = len(cluster.frames)
    [request] = cluster.run_until(lambda: sent_since(cluster, mark, f1, REQUEST), f1)
    cluster.send(f2, f1, {"type": REPLY, "id": request["id"], "index": 1})
    cluster.send(leader, f1, {"type": REPLY, "id": request["id"] + 1, "index": 1})
    cluster.send(leader, f1, {"type": REPLY, "id": str(request["id"]), "index": 1})
    drain(cluster, f1, f2, leader)
    assert answers == []
    cluster.paused = set()
    [answer] = cluster.run_until(lambda: answers)
    assert answer.error == FAIL_REASON.SUCCESS
    assert answer.index >= written
    assert answer.applied >= answer.index  # answered only once f1 had applied the index


def test_request_ids_start_at_random_on_each_node(cluster: Cluster) -> None:
    """Ids restarting at 1 in every process would let a reply owed to a node's previous
    incarnation match its first new request."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    mark = len(cluster.frames)
    ask(f1)
    ask(f2)
    [first] = cluster.run_until(lambda: sent_since(cluster, mark, f1, REQUEST), f1)
    [second] = cluster.run_until(lambda: sent_since(cluster, mark, f2, REQUEST), f2)
    assert first["id"] != second["id"]


def test_the_leader_answers_with_its_commit_index_when_the_read_arrived(
    cluster: Cluster,
) -> None:
    """A write committed while the read is being confirmed is not one the read must see."""
    leader = cluster.calm()
    f1, _ = cluster.others(leader)
    cluster.paused = {address(n) for n in cluster.others(leader)}
    before = leader.raftCommitIndex
    answers = ask(leader)
    read_indexed(cluster, leader)
    committed: list[Any] = []
    leader.submit(b"later", lambda applied, _: committed.append(applied.index))
    mark = len(cluster.frames)
    cluster.run_until(lambda: sent_since(cluster, mark, leader, "append_entries"), leader)
    # f1 acknowledges the probe and the entry; the leader reads both in one poll, then commits
    # the entry before it counts the probe's acknowledgement.
    cluster.run_until(
        lambda: any((f.claims or 0) > before for f in cluster.frames[mark:] if f.sender is f1), f1
    )
    [answer] = cluster.run_until(lambda: answers, leader)
    assert committed and committed[0] > before  # the write did commit before the answer
    assert (answer.index, answer.error) == (before, FAIL_REASON.SUCCESS)


def test_acknowledgements_of_probes_sent_before_a_read_do_not_confirm_it(
    cluster: Cluster,
) -> None:
    """Only a probe sent after the read arrived shows that nobody else led since."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f2)}
    first = ask(leader)
    [answer] = cluster.run_until(lambda: first)  # confirmed by f1's acknowledgement
    assert answer.error == FAIL_REASON.SUCCESS
    cluster.paused.add(address(f1))
    second = ask(leader)
    [answer] = cluster.run_until(lambda: second, leader, timeout=GIVE_UP_AFTER + 10)
    assert answer.error == REFUSED


def test_an_acknowledgement_from_an_older_term_does_not_confirm_a_read(cluster: Cluster) -> None:
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f1), address(f2)}
    answers = ask(leader)
    probe = read_indexed(cluster, leader)
    stale = {"type": PROBE_ACK, "term": probe["term"] - 1, "seq": probe["seq"] + 1000}
    cluster.send(f1, leader, stale)
    drain(cluster, leader, f1)
    assert answers == []
    cluster.paused = {address(f2)}
    [answer] = cluster.run_until(lambda: answers)
    assert answer.error == FAIL_REASON.SUCCESS


@pytest.mark.usefixtures("no_give_up")
def test_the_leader_refuses_reads_until_it_has_committed_in_its_term(cluster: Cluster) -> None:
    """Before its no-op commits, a new leader does not know that its commit index covers every
    committed entry: a local read is refused (the caller appends a barrier instead), a
    follower's request gets an error reply."""
    leader = cluster.run_until(cluster.leader)  # stops right after the election: no acks yet
    assert leader.raftCommitIndex < leader.journal.last_index
    leader.conf.leaderFallbackTimeout = scaled(600)  # it must stay the leader
    f1, _ = cluster.others(leader)
    cluster.paused = {address(n) for n in cluster.others(leader)}
    answers = ask(leader)
    mark = len(cluster.frames)
    cluster.send(f1, leader, {"type": REQUEST, "id": 7})
    cluster.run_until(lambda: answers and sent_since(cluster, mark, leader, REPLY), leader)
    assert [a.error for a in answers] == [REFUSED]
    assert sent_since(cluster, mark, leader, REPLY) == [
        {"type": REPLY, "id": 7, "error": "no read index"}
    ]
    assert leader._isLeader() and leader.raftCommitIndex < leader.journal.last_index


def test_malformed_messages_are_dropped(cluster: Cluster) -> None:
    """Only an authenticated peer can send these, but one that raised would abort pysyncobj's
    tick, and one kept would break the comparisons that confirm reads."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    term = leader.raftCurrentTerm
    malformed: list[dict[str, Any]] = [
        {"type": PROBE},
        {"type": PROBE, "term": str(term), "seq": 1},
        {"type": PROBE_ACK, "term": term},
        {"type": PROBE_ACK, "term": term, "seq": "9"},
        {"type": REQUEST},
        {"type": REQUEST, "id": "9"},
        {"type": REPLY, "index": 3},
    ]
    for message in malformed:
        cluster.send(leader, f1, message)
        cluster.send(f1, leader, message)
    mark = len(cluster.frames)
    drain(cluster, f1, leader)
    drain(cluster, leader, f1)
    replies = sent_since(cluster, mark, f1, REPLY) + sent_since(cluster, mark, leader, REPLY)
    acks = sent_since(cluster, mark, f1, PROBE_ACK) + sent_since(cluster, mark, leader, PROBE_ACK)
    assert replies == []
    assert all(isinstance(a["seq"], int) and a["seq"] < 0 for a in acks)  # the drain markers
    cluster.paused = {address(f2)}
    answers = ask(leader)
    [answer] = cluster.run_until(lambda: answers)
    assert answer.error == FAIL_REASON.SUCCESS


# -- when an answer does not come ------------------------------------------------------------


def test_a_follower_refuses_a_read_its_leader_leaves_unanswered(cluster: Cluster) -> None:
    """The request or its reply may be lost with a connection, or the leader may predate read
    indexes (a rolling upgrade): after GIVE_UP_AFTER the caller falls back to a barrier."""
    leader = cluster.calm()
    f1, _ = cluster.others(leader)
    cluster.paused = {address(leader)}
    asked_at = monotonic()
    answers = ask(f1)
    [answer] = cluster.run_until(lambda: answers, f1, timeout=GIVE_UP_AFTER + 10)
    assert answer.error == REFUSED
    assert answer.at - asked_at >= GIVE_UP_AFTER
    assert f1._getLeader() == leader.selfNode  # refused for its age, not for a leader change


def test_the_leader_refuses_a_read_no_majority_confirms(cluster: Cluster) -> None:
    leader = cluster.calm()
    cluster.paused = {address(n) for n in cluster.others(leader)}
    asked_at = monotonic()
    answers = ask(leader)
    [answer] = cluster.run_until(lambda: answers, leader, timeout=GIVE_UP_AFTER + 10)
    assert answer.error == REFUSED
    assert answer.at - asked_at >= GIVE_UP_AFTER
    assert leader._isLeader()  # refused for its age, not because the leader stepped down


@pytest.mark.usefixtures("no_give_up")
def test_the_leader_probes_again_for_a_read_whose_probe_was_lost(cluster: Cluster) -> None:
    """A probe sent while a connection was down is lost; the leader probes again every
    REPROBE_AFTER, so the read is confirmed once the connection is back. (Without the give-up:
    how soon the connection is back, through the wire's handshake on a loaded machine, is not
    this rule's business; without the re-probe the read is never confirmed.)"""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f2)}
    disconnect(leader, f1)
    answers = ask(leader)
    first = read_indexed(cluster, leader)  # reached only f2's connection
    mark = len(cluster.frames)
    [answer] = cluster.run_until(lambda: answers)
    assert answer.error == FAIL_REASON.SUCCESS
    assert all(ack["seq"] > first["seq"] for ack in sent_since(cluster, mark, f1, PROBE_ACK))


@pytest.mark.usefixtures("no_give_up")
def test_a_follower_refuses_a_read_when_sending_the_request_fails(cluster: Cluster) -> None:
    leader = cluster.calm()
    f1, _ = cluster.others(leader)
    cluster.paused = {address(leader)}
    disconnect(f1, leader)
    mark = len(cluster.frames)
    answers = ask(f1)
    cluster.tick(f1)
    assert [a.error for a in answers] == [REFUSED]  # at once, not after a give-up time
    assert sent_since(cluster, mark, f1, REQUEST) == []


@pytest.mark.usefixtures("no_give_up")
def test_a_follower_refuses_a_read_when_the_leader_replies_with_an_error(
    cluster: Cluster,
) -> None:
    """f1, cut off from f2, still takes the old leader for the leader when it asks; the old
    leader, deposed by f2 meanwhile, answers "not the leader"."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    for node in (f1, f2):
        node.conf.connectionRetryTime = scaled(600)
    disconnect(f1, f2)
    disconnect(f2, f1)
    cluster.paused = {address(f1)}
    transfer(cluster, leader, f2)
    cluster.run_until(lambda: f2._isLeader() and not leader._isLeader(), leader, f2)
    assert f1._getLeader() == leader.selfNode
    answers = ask(f1)
    mark = len(cluster.frames)
    [answer] = cluster.run_until(lambda: answers, f1, leader)
    assert answer.error == REFUSED
    [request] = sent_since(cluster, mark, f1, REQUEST)
    assert sent_since(cluster, mark, leader, REPLY) == [
        {"type": REPLY, "id": request["id"], "error": "not the leader"}
    ]
    assert f1._getLeader() == leader.selfNode  # refused for the reply, not a leader change


@pytest.mark.usefixtures("no_give_up")
def test_the_leader_refuses_a_pending_read_once_its_term_is_over(cluster: Cluster) -> None:
    """The leader reads f1's acknowledgement of the probe together with f1's vote request for
    the next term: it is not the leader any more when it counts, and refuses."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    term = leader.raftCurrentTerm
    cluster.paused = {address(f2)}
    transfer(cluster, leader, f1)
    answers = ask(leader)
    read_indexed(cluster, leader)
    mark = len(cluster.frames)
    cluster.run_until(lambda: sent_since(cluster, mark, f1, "request_vote"), f1)
    assert sent_since(cluster, mark, f1, PROBE_ACK)  # in the old term, before the vote request
    [answer] = cluster.run_until(lambda: answers, leader)
    assert answer.error == REFUSED
    assert leader.raftCurrentTerm > term and not leader._isLeader()


@pytest.mark.usefixtures("no_give_up")
def test_a_follower_refuses_a_pending_read_when_the_leader_changes(cluster: Cluster) -> None:
    """The leader asked may never answer (its connection may be gone with its leadership)."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    transfer(cluster, leader, f1)
    cluster.paused = {address(leader)}
    answers = ask(f2)
    mark = len(cluster.frames)
    cluster.run_until(lambda: sent_since(cluster, mark, f2, REQUEST), f2)
    [answer] = cluster.run_until(lambda: answers, f1, f2)
    assert answer.error == REFUSED
    assert f2._getLeader() != leader.selfNode
    assert sent_since(cluster, mark, leader, REPLY) == []  # the old leader never answered


def test_a_member_added_while_a_read_is_pending_does_not_change_its_majority(
    cluster: Cluster,
) -> None:
    """A read is confirmed by a majority of the members when it arrived. With one change at a
    time, any majority of those overlaps any majority of the next configuration, so no other
    leader can have committed since; counting the new member would make the read wait for a
    node that may still be starting (here: one that never does) until it is refused."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f1), address(f2)}
    before = leader.raftCommitIndex
    answers = ask(leader)
    read_indexed(cluster, leader)
    added = f"127.0.0.1:{free_port()}"
    leader.addNodeToCluster(added)
    cluster.run_until(lambda: added in {str(n) for n in leader.otherNodes}, leader)
    cluster.paused = {address(f2)}
    [answer] = cluster.run_until(lambda: answers)
    assert (answer.index, answer.error) == (before, FAIL_REASON.SUCCESS)


@contextlib.contextmanager
def proposer_on(
    node: RaftNode, root: Path, loop: asyncio.AbstractEventLoop
) -> Iterator[RaftProposer]:
    """The registry's RaftProposer over ``node`` (its own store in ``root``), bound to
    ``loop``: what settles a read on the event loop, and appends a barrier entry when the read
    is refused."""
    store = Store(str(root / "lmdb"))
    config = Config(data_dir=str(root), encryption_key="read-index-test-key-0123456789abcd")
    machine = StateMachine(store, restore_view(store, config.events_history), 1000)
    proposer = RaftProposer(config, Peers(address(node), ()), machine, Liveness(), lambda _: None)
    proposer.node = node
    proposer.bind(loop)
    try:
        yield proposer
    finally:
        store.close()


def test_an_answer_for_a_loop_closed_by_shutdown_does_not_break_the_tick(
    cluster: Cluster, tmp_path: Path
) -> None:
    """RaftProposer settles a read on the asking event loop; one closed by shutdown while the
    read was pending has nobody waiting, and raising on the tick thread would skip the rest of
    pysyncobj's tick (here: the next read's answer)."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    loop = asyncio.new_event_loop()
    with proposer_on(leader, tmp_path, loop) as proposer:
        try:
            cluster.paused = {address(f1), address(f2)}  # the read stays pending
            request = leader.read_index.request
            pending = loop.create_task(proposer._committed(request, "timed out"))
            loop.run_until_complete(asyncio.sleep(0))  # the task has asked for the read
            pending.cancel()
            loop.run_until_complete(asyncio.gather(pending, return_exceptions=True))
        finally:
            loop.close()
        after = ask(leader)
        cluster.paused = {address(f2)}
        [answer] = cluster.run_until(lambda: after)  # a tick that raised would raise out of here
    assert answer.error == FAIL_REASON.SUCCESS


@pytest.mark.usefixtures("no_give_up")
def test_a_refused_read_falls_back_to_a_barrier_entry(cluster: Cluster, tmp_path: Path) -> None:
    """A barrier the read index cannot give (here: a leader whose no-op has not committed)
    appends an empty entry and returns once it is committed and applied."""
    leader = cluster.run_until(cluster.leader)  # right after the election: no acks yet
    leader.conf.leaderFallbackTimeout = scaled(600)  # it must stay the leader
    noop = leader.journal.last_index
    cluster.paused = {address(n) for n in cluster.others(leader)}
    cluster.tick(leader)  # its status now says it leads (RaftProposer looks there first)

    async def barrier() -> None:
        with proposer_on(leader, tmp_path, asyncio.get_running_loop()) as proposer:
            task = asyncio.ensure_future(proposer.barrier())
            await asyncio.sleep(0)
            while not task.done():
                if leader.journal.last_index > noop:  # the fallback entry: let it commit
                    cluster.paused = set()
                for node in cluster.nodes:
                    if address(node) not in cluster.paused:
                        cluster.tick(node)
                await asyncio.sleep(0)  # the loop settles what the tick answered
            task.result()

    asyncio.run(asyncio.wait_for(barrier(), scaled(20)))
    assert leader.journal.last_index == noop + 1
    assert noop + 1 in cluster.applied[address(leader)]


@pytest.mark.usefixtures("no_give_up")
def test_confirmations_count_only_from_members_in_good_standing(cluster: Cluster) -> None:
    """A member the leader is still bringing back after it lost its disk (a new incarnation
    catching up) confirms nothing: an empty member answering a deposed leader's probes must not
    make that leader's reads look confirmed by a majority."""
    leader = cluster.calm()
    f1, f2 = cluster.others(leader)
    cluster.paused = {address(f2)}
    # f1 as the leader sees a member back from a lost disk: known by its old incarnation,
    # its new one still catching up.
    leader.incarnations.known = {**leader.incarnations.known, address(f1): "before-the-loss"}
    leader.incarnations.recovering[address(f1)] = (f1.incarnations.identity, 10**9)
    answers = ask(leader)
    read_indexed(cluster, leader)
    mark = len(cluster.frames)
    cluster.run_until(lambda: sent_since(cluster, mark, f1, PROBE_ACK), f1)
    drain(cluster, leader, f1)  # the leader has read f1's confirmation
    cluster.tick(leader)
    assert answers == []  # the leader and f1: not a majority that counts
    del leader.incarnations.recovering[address(f1)]
    [answer] = cluster.run_until(lambda: answers, leader, f1)
    assert answer.error == FAIL_REASON.SUCCESS
