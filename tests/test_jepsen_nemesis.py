"""The nemesis keeps to one lost disk at a time (jepsen_like/nemesis.py, ``wipe``).

The replicas here answer ``GET /api/v1/cluster`` from a table the test sets: which replica
leads and whether the one whose disk was lost is recognised again. The rule under test is the
harness's own choice of victim, not the registry's behaviour."""

from __future__ import annotations

from typing import Any, cast

from jepsen_like.db import Replica
from jepsen_like.hosts import Network, dns_name
from jepsen_like.nemesis import Nemesis
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
