"""Raft replication of the event log (pysyncobj) between StatefulSet pods.

The registry uses only :func:`open_cluster`, which returns a :class:`registry.commit.Proposer`:
the same "propose an event, get it back committed" interface that single-node mode implements
with :class:`registry.commit.LocalLog`.
"""

from __future__ import annotations

from collections.abc import Callable

from registry.commit import Proposer, StateMachine
from registry.config import Config
from registry.health import Liveness
from registry.metrics import Metrics


def open_cluster(
    config: Config,
    machine: StateMachine,
    liveness: Liveness,
    metrics: Metrics,
    on_fatal: Callable[[BaseException], None],
) -> Proposer:
    """A Raft proposer for this node (peers from REGISTRY_PEERS or the StatefulSet's DNS)."""
    from replication.metrics import RaftCollector
    from replication.peers import discover
    from replication.proposer import RaftProposer

    proposer = RaftProposer(config, discover(config), machine, liveness, on_fatal)
    metrics.registry.register(RaftCollector(proposer))
    return proposer
