"""Three registries that replicate, in either of the two ways the registry can: a Raft cluster
(tests/test_cluster.py's ``Cluster``) or PostgreSQL-mode replicas sharing one event log in a
database of a server of tests/postgres.py (``Replicas``, with the same interface).

Tests that hold for any replicated registry (the compatibility suite's answers compared with
the Go registry's) take the ``topology`` fixture and run once per way, so that a difference
only one of them has shows, without a copy of the test for each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from tests.postgres import Postgres
from tests.processes import Registry
from tests.test_cluster import Cluster

FAST = {"LEADER_ELECTION_RETRY_PERIOD": "200ms", "WRITE_TIMEOUT": "3s"}
"""A killed decider's lock is taken over within 200 ms of its session ending, and a write the
database does not confirm is answered (503, outcome unknown) within 3 s: a test waits for
either no longer than its own deadline allows."""

TOPOLOGIES = ("raft", "postgresql")
_databases = itertools.count()
"""Numbers the session's databases of PostgreSQL-mode replicas."""


def replica(root: Path, server: Postgres, i: int, port: int | None = None, **env: str) -> Registry:
    """Replica ``i`` of ``server``'s database (not started; another database of it by
    ``DATABASE_NAME`` in ``env``), its files in ``root/r<i>``."""
    return Registry(
        root / f"r{i}",
        port=port,
        **{**server.env, **FAST, "REGISTRY_INSTANCE_ID": f"replica-{i}", **env},
    )


class Replicas:
    """N PostgreSQL-mode replicas on one database, shaped like ``Cluster``: ``nodes``,
    ``start(i, **env)`` and ``start_all()``, each started node noted in ``started``."""

    def __init__(
        self, root: Path, started: list[Registry], server: Postgres, n: int = 3, **env: str
    ) -> None:
        self.root = root
        self.started = started
        self.server = server
        self.env = env
        self.nodes = [replica(root, server, i, **env) for i in range(n)]

    def start(self, i: int, **env: str) -> Registry:
        # ``env`` over the replicas' own, as Cluster.start: a restart may change a setting
        node = replica(self.root, self.server, i, self.nodes[i].port, **{**self.env, **env})
        self.nodes[i] = node
        self.started.append(node.start())
        return node

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)


class Replicated(Protocol):
    """What a test may use of either topology."""

    nodes: list[Registry]

    def start(self, i: int, **env: str) -> Registry: ...

    def start_all(self) -> None: ...


Topology = Callable[..., Replicated]
"""``topology(**env)``: three replicas (not started) with ``env`` on each."""


def three_replicas(
    kind: str, request: pytest.FixtureRequest, root: Path, started: list[Registry]
) -> Topology:
    """A maker of three replicas of ``kind`` (one of TOPOLOGIES), not started, with the
    environment it is given on each. In PostgreSQL mode they get a new database of their own
    on the session's server (tests/conftest.py's ``shared_postgres``: a server made for each
    test cost 1.5-3 s of initdb and start, on every PostgreSQL variant), asked of pytest only
    for that kind, so that the Raft variants neither need nor start one. Advisory locks and
    NOTIFY channels are per database: no test sees another's decider or log."""
    if kind == "raft":
        return lambda **env: Cluster(root, started, **env)
    server: Postgres = request.getfixturevalue("shared_postgres")
    database = server.database(f"replicas_{next(_databases)}").name
    return lambda **env: Replicas(root, started, server, **{"DATABASE_NAME": database, **env})


@pytest.fixture(params=TOPOLOGIES)
def topology(
    request: pytest.FixtureRequest, tmp_path: Path, registries: list[Registry]
) -> Topology:
    """Makes the test's three replicas, once as a Raft cluster and once in PostgreSQL mode."""
    return three_replicas(request.param, request, tmp_path, registries)
