"""Who the peers are, and how the guide's leader-election settings become Raft timing.

Identity: in a StatefulSet the pod name ``<sts>-<ordinal>`` is stable, so every pod can name
every other one through the headless Service: ``<sts>-<i>.<HEADLESS_SERVICE>.<POD_NAMESPACE>.svc.
<CLUSTER_DOMAIN>:<RAFT_PORT>``. Those names must resolve *before* a pod is Ready (a pod only becomes
Ready once it has joined the cluster), which is why the headless Service needs
``publishNotReadyAddresses: true``; otherwise the first pods could never find each other.
``REGISTRY_PEERS`` (``host:port,...``, this node included) overrides the DNS names for clusters
outside Kubernetes (local processes, tests, the chaos harness).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from registry.config import Config, ConfigError

_POD_NAME = re.compile(r"^(?P<sts>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)$")


@dataclass(frozen=True)
class Peers:
    """This node's Raft address and the other members' addresses (the strings are identities)."""

    self_address: str
    others: tuple[str, ...]

    @property
    def size(self) -> int:
        return 1 + len(self.others)


def discover(config: Config) -> Peers:
    """The cluster's members from REGISTRY_PEERS, else from the StatefulSet's DNS names."""
    if config.peers:
        return _from_list(config)
    match = _POD_NAME.match(config.pod_name)
    if not match:
        raise ConfigError(
            f"POD_NAME={config.pod_name!r} is invalid: expected <statefulset>-<ordinal> "
            "(set REGISTRY_PEERS=host:port,... outside a StatefulSet)"
        )
    ordinal = int(match.group("ordinal"))
    sts = match.group("sts")
    suffix = f"{config.headless_service}.{config.pod_namespace}.svc.{config.cluster_domain}"
    # Ordinals 0..REGISTRY_REPLICAS-1 form the initial cluster. A pod above them (added by
    # `kubectl scale`) lists every lower ordinal: it finds the running cluster there and joins
    # it, and can never elect itself alone, because its list holds more than itself.
    count = max(config.replicas, ordinal + 1)
    names = [f"{sts}-{i}.{suffix}:{config.raft_port}" for i in range(count)]
    mine = names[ordinal]
    return Peers(mine, tuple(n for n in names if n != mine))


def _local_names(config: Config) -> set[str]:
    names = {"127.0.0.1", "localhost", "0.0.0.0", socket.gethostname()}
    names.update(n for n in (config.pod_ip, config.pod_name, config.instance_id) if n)
    return names


def _from_list(config: Config) -> Peers:
    local = _local_names(config)
    mine = [
        peer
        for peer in config.peers
        if int(peer.rpartition(":")[2]) == config.raft_port
        and (peer.rpartition(":")[0] in local or peer.split(".", 1)[0] in local)
    ]
    if len(mine) != 1:
        raise ConfigError(
            f"REGISTRY_PEERS={','.join(config.peers)!r} is invalid: expected exactly one entry for "
            f"this node (host:{config.raft_port} with host one of {', '.join(sorted(local))})"
        )
    return Peers(mine[0], tuple(p for p in config.peers if p != mine[0]))


@dataclass(frozen=True)
class RaftTiming:
    """pysyncobj timing derived from the guide's Lease settings.

    A Kubernetes Lease of 15 s means "fail over within 15 s"; Raft detects a dead leader by a
    missed heartbeat instead, so the mapping scales everything down while keeping the operator's
    knobs meaningful (doubling the lease doubles every timeout):

    - election timeout: LEASE_DURATION / 25 to / 12.5 (0.6-1.2 s by default)
    - leader heartbeat: election timeout minimum / 6 (0.1 s)
    - a leader that cannot reach a majority steps down after RENEW_DEADLINE / 5 (2 s)
    - reconnect to a peer every RETRY_PERIOD / 4 (0.5 s); DNS answers cached RETRY_PERIOD (2 s)
    """

    election_min: float
    election_max: float
    heartbeat: float
    step_down: float
    reconnect: float
    dns_cache: float

    @classmethod
    def from_config(cls, config: Config) -> RaftTiming:
        election_min = max(config.lease_duration / 25, 0.3)
        return cls(
            election_min=election_min,
            election_max=election_min * 2,
            heartbeat=election_min / 6,
            step_down=max(config.renew_deadline / 5, election_min * 2),
            reconnect=max(config.retry_period / 4, 0.1),
            dns_cache=config.retry_period,
        )
