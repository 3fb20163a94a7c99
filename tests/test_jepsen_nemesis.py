"""The nemesis keeps to one lost disk at a time (jepsen_like/nemesis.py, ``wipe``) and cuts a
majority's power with the leader among it, and the PostgreSQL topology's schedule
(jepsen_like/pg_nemesis.py) is planned from its own kinds and pair rules.

For the lost disk, the replicas here answer ``GET /api/v1/cluster`` from a table the test
sets: which replica leads and whether the one whose disk was lost is recognised again. The rule
under test is the harness's own choice of victim, not the registry's behaviour."""

from __future__ import annotations

from typing import Any, cast

from jepsen_like.__main__ import _not_offered
from jepsen_like.db import Replica
from jepsen_like.hosts import Network, dns_name
from jepsen_like.nemesis import KINDS, Nemesis, plan
from jepsen_like.pg_nemesis import PG_KINDS, pg_compatible
from jepsen_like.stranger import RAFT_PORT


class Answering:
    """A replica reduced to what the victim choice reads of it."""

    def __init__(self, ordinal: int, cluster: dict[str, Any]) -> None:
        self.ordinal = ordinal
        self.cluster = cluster

    def alive(self) -> bool:
        return bool(self.cluster["alive"][self.ordinal])

    def get(self, path: str) -> tuple[int, object]:
        assert path == "/api/v1/cluster"
        lead = self.cluster["leader"]
        members = [
            {"id": f"{dns_name(i)}:{RAFT_PORT}", "catching_up": i in self.cluster["catching_up"]}
            for i in range(3)
        ]
        return 200, {
            "role": "leader" if self.ordinal == lead else "follower",
            "leader": f"{dns_name(lead)}:{RAFT_PORT}",
            "recognised": self.ordinal not in self.cluster["unrecognised"],
            "members": members,
        }


def _nemesis(cluster: dict[str, Any]) -> Nemesis:
    replicas = cast(list[Replica], [Answering(i, cluster) for i in range(3)])
    return Nemesis(cast(Network, None), replicas, [], seed=1, log=lambda _: None)


def test_a_second_lost_disk_is_the_same_replicas_until_it_is_recognised() -> None:
    cluster: dict[str, Any] = {
        "alive": [True, True, True],
        "leader": 2,
        "unrecognised": {1},
        "catching_up": {1},
    }
    nemesis = _nemesis(cluster)
    nemesis.lost_disk = 1
    assert [nemesis._disk_victim([0, 2]) for _ in range(5)] == [1] * 5
    assert nemesis.again

    cluster["unrecognised"] = set()  # it heard the leader name its new incarnation...
    assert nemesis._disk_victim([0, 2]) == 1  # ...but the leader still counts it catching up
    cluster["alive"][1] = False
    assert nemesis._disk_victim([0, 2]) == 1  # down: not recovered either

    cluster["alive"][1] = True
    cluster["catching_up"] = set()
    victims = {nemesis._disk_victim([0, 2]) for _ in range(20)}
    assert victims <= {0, 2} and not nemesis.again and nemesis.lost_disk is None


def test_a_majority_power_loss_takes_the_leader_and_one_other() -> None:
    """The ``majority`` shape of ``power``: the members that counted the newest entries (the
    leader and one follower) lose power together while the third keeps running."""
    cluster: dict[str, Any] = {
        "alive": [True, True, True],
        "leader": 1,
        "unrecognised": set(),
        "catching_up": set(),
    }
    nemesis = _nemesis(cluster)
    picks = [nemesis._majority() for _ in range(20)]
    assert all(len(p) == 2 and 1 in p for p in picks)
    assert {tuple(p) for p in picks} == {(0, 1), (1, 2)}  # the other one drawn at random
    cluster["alive"] = [False, False, False]  # no leader found: any two
    picks = [nemesis._majority() for _ in range(30)]
    assert all(len(set(p)) == 2 for p in picks) and len({tuple(p) for p in picks}) == 3


def test_the_postgresql_schedule_has_every_kind_and_only_safe_pairs() -> None:
    """The PostgreSQL topology's plan: every one of its kinds in the first round, pairs only
    where ``pg_compatible`` allows (never the server killed while paused, never a decider
    kill second or beside a server fault), replayed from its seed."""
    kinds = list(PG_KINDS)
    schedule = plan(kinds, 30, seed=11, pairs=pg_compatible)
    assert schedule == plan(kinds, 30, seed=11, pairs=pg_compatible)
    assert sorted(p.kind for p in schedule) == sorted(PG_KINDS)
    assert sum(p.overlaps is not None for p in schedule) == 1
    paired = set()
    for seed in range(200):
        schedule = plan(kinds, 300, seed, overlaps=2, pairs=pg_compatible)
        assert {p.kind for p in schedule} == set(PG_KINDS)
        for p in schedule:
            if p.overlaps is not None:
                first = schedule[p.overlaps]
                assert pg_compatible(first.kind, p.kind)
                assert first.at < p.at < first.at + first.hold
                paired.add((first.kind, p.kind))
    assert not paired & {("pg-kill", "pg-pause"), ("pg-pause", "pg-kill")}
    assert all(second != "kill-decider" for _, second in paired)
    assert ("kill-decider", "pause") in paired and ("pg-kill", "kill") in paired
    assert ("db-partition", "client-partition") in paired  # a table each: they heal apart


def test_pair_rules_of_the_postgresql_topology() -> None:
    assert pg_compatible("pg-kill", "kill")
    assert pg_compatible("db-partition", "db-partition")  # on two replicas, a table each
    assert pg_compatible("kill-decider", "db-partition")
    assert not pg_compatible("pg-kill", "pg-pause")
    assert not pg_compatible("pg-pause", "pg-pause")
    assert not pg_compatible("pause", "kill-decider")
    assert not pg_compatible("kill-decider", "pg-kill")


def test_a_nemesis_of_the_other_topology_is_refused_by_name() -> None:
    assert _not_offered(list(PG_KINDS), "postgresql") is None
    assert _not_offered(list(KINDS), "raft") is None
    refused = _not_offered(["kill", "power", "membership", "nonsense"], "postgresql")
    assert refused is not None
    assert "power (a raft topology nemesis), membership (a raft topology nemesis)" in refused
    assert "nonsense (unknown)" in refused
    assert "pg-kill (a postgresql topology nemesis)" in str(_not_offered(["pg-kill"], "raft"))
    assert set(PG_KINDS) & set(KINDS) == {"kill", "pause"}
