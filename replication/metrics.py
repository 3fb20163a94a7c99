"""The Raft cluster's Prometheus metrics (registered by :func:`replication.open_cluster`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from replication.proposer import RaftProposer


class RaftCollector(Collector):
    """Raft metrics, read from the tick thread's last status snapshot at scrape time."""

    def __init__(self, proposer: RaftProposer) -> None:
        self.proposer = proposer

    def collect(self) -> Iterator[Metric]:
        node = self.proposer.node
        status = node.status_snapshot if node is not None else None
        yield GaugeMetricFamily(
            "mcp_registry_raft_term", "Raft term", value=status.term if status else 0
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_is_leader",
            "1 on the leader",
            value=1 if status is not None and status.leading else 0,
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_commit_index",
            "Raft commit index",
            value=status.commit_index if status else 0,
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_applied_index",
            "Raft last applied index",
            value=status.last_applied if status else 0,
        )
        yield CounterMetricFamily(
            "mcp_registry_raft_leader_changes",
            "Leader changes seen",
            value=node.leader_changes if node is not None else 0,
        )
        yield GaugeMetricFamily(
            "mcp_registry_raft_peers",
            "Cluster members including self",
            value=len(status.members) if status else 0,
        )
