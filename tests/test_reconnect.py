"""A peer connection closed by either end is made again at once (``replication/connection.py``).

pysyncobj connects from the node with the greater address only; when the accepting node closes
the connection, the connecting one reads end-of-file and, inside that same read, pysyncobj has it
connect again on the same connection object. The rest of that poll event must not then act on
the new socket: it used to drop the new socket's WRITE interest, so its connect never completed,
its HELLO was never sent, and the acceptor closed it unauthenticated after
``wire.HANDSHAKE_TIMEOUT``, again and again (the two nodes stayed apart for many seconds).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.node import TCPNode

from replication import wire
from replication.syncobj import RaftNode
from tests.raft_cluster import Cluster, address, running

REJOIN = 1.0
"""Seconds (``Cluster.run_until`` scales them) two nodes may take to connect and finish the
handshake again on loopback: far more than it takes, and at TEST_TIME_SCALE 1 under
``wire.HANDSHAKE_TIMEOUT``, whose expiry the broken reconnect waited for."""
ROUNDS = 3
"""Whether the accepting end's close reaches the other as end-of-file or as a reset (unread
bytes) varies with timing; only end-of-file took the broken path, so each close is repeated."""


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with running(tmp_path, monkeypatch) as made:
        yield made


def connected(a: RaftNode, b: RaftNode) -> bool:
    return bool(a.isNodeConnected(TCPNode(address(b))) and b.isNodeConnected(TCPNode(address(a))))


def test_a_connection_closed_by_either_end_is_made_again_at_once(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    leader = cluster.calm()
    caplog.set_level(logging.WARNING, logger="replication")
    closed = {"connecting": 0, "accepting": 0}
    for _ in range(ROUNDS):
        for a in cluster.nodes:
            for b in cluster.others(a):
                assert a.transport is not None
                conn = a.transport._connections[TCPNode(address(b))]
                end = "connecting" if address(a) > address(b) else "accepting"
                closed[end] += 1
                conn.disconnect()
                assert not a.isNodeConnected(TCPNode(address(b)))
                started = time.monotonic()
                try:
                    cluster.run_until(functools.partial(connected, a, b), timeout=REJOIN)
                except AssertionError:
                    raise AssertionError(
                        f"{address(a)} closed its {end} connection to {address(b)}: "
                        f"not connected again after {time.monotonic() - started:.1f} s"
                    ) from None
    assert closed["accepting"] == closed["connecting"] == 3 * ROUNDS
    expired = f"no handshake in {wire.HANDSHAKE_TIMEOUT:.1f} s"
    assert not [r for r in caplog.records if expired in r.getMessage()]
    cluster.write(leader)  # and the cluster still commits through every connection


def test_a_listener_closed_by_a_failed_accept_is_bound_again(cluster: Cluster) -> None:
    """pysyncobj closes its listening socket on an accept error such as EMFILE (a flood used
    up the descriptors) and never binds it again: no peer could connect to that node for good.
    Here the listener is closed as pysyncobj does on that error; the node binds it again and
    a peer whose connection to it was lost connects again."""
    leader = cluster.calm()
    follower = min(cluster.others(leader), key=address)  # the other follower dials it
    assert follower.transport is not None
    follower.transport._server.unbind()  # what pysyncobj's accept handler does on EMFILE
    for node in cluster.nodes:
        for peer in cluster.others(node):
            conn = node.transport._connections[TCPNode(address(peer))]  # type: ignore[union-attr]
            if follower in (node, peer):
                conn.disconnect()
    cluster.run_until(
        lambda: all(connected(follower, other) for other in cluster.others(follower)),
        timeout=REJOIN + 2,
    )
    cluster.write(leader)
