"""The nemesis keeps to one lost disk at a time (jepsen_like/nemesis.py, ``wipe``) and cuts a
majority's power with the leader among it, and the PostgreSQL topology's schedule
(jepsen_like/pg_nemesis.py) is planned from its own kinds and pair rules.

For the lost disk, the replicas here answer ``GET /api/v1/cluster`` from a table the test
sets: which replica leads and whether the one whose disk was lost is recognised again. The rule
under test is the harness's own choice of victim, not the registry's behaviour."""

from __future__ import annotations

import random
import signal
from typing import Any, cast

import pytest

from jepsen_like import nemesis as nemesis_module
from jepsen_like.__main__ import _not_offered
from jepsen_like.db import Replica
from jepsen_like.hosts import RESET, Host, Network, dns_name
from jepsen_like.nemesis import KINDS, MEMBERSHIP_SHAPES, Fault, Nemesis, plan
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
        if path == "/ready":
            return (200 if self.up else 0), {}
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


class Pod:
    """A replica or spare pod reduced to what ``membership`` does to it, each action logged."""

    def __init__(self, ordinal: int, world: dict[str, Any]) -> None:
        self.ordinal = ordinal
        self.world = world
        self.up = ordinal < 3
        self.paused = False

    def _log(self, action: str) -> None:
        self.world["log"].append((action, self.ordinal))

    def alive(self) -> bool:
        return self.up

    def start(self) -> None:
        self._log("start")
        self.up = True

    def stop(self) -> None:
        self._log("stop")
        self.up = False

    def kill(self) -> None:
        self._log("kill")
        self.up = False

    def power_loss(self) -> None:
        self._log("power_loss")
        self.up = False

    def wipe(self) -> None:
        self._log("wipe")

    def signal(self, sig: signal.Signals) -> None:
        self._log(sig.name)
        self.paused = sig == signal.SIGSTOP

    def get(self, path: str) -> tuple[int, object]:
        if path == "/ready":
            return (200 if self.up else 0), {}
        assert path == "/api/v1/cluster"
        running = [i for i, pod in enumerate(self.world["pods"]) if pod.up]
        listed = sorted(
            {*running, *self.world.get("ghosts", ()), *self.world["extra"].get(self.ordinal, ())}
        )
        members = [{"id": f"{dns_name(i)}:{RAFT_PORT}"} for i in listed]
        lead = self.world["leader"]
        if not self.world["pods"][lead].up:  # the others elect the lowest ordinal running
            lead = min(running)
        role = "leader" if self.ordinal == lead else "follower"
        return 200, {"role": role, "members": members}

    def request(self, method: str, path: str, timeout: float) -> tuple[int, object]:
        assert method == "DELETE" and path.startswith("/api/v1/cluster/members/")
        self._log("remove")
        working = [pod for pod in self.world["pods"] if pod.up and not pod.paused]
        return (200 if len(working) >= 3 or self.world.get("always_ack") else 0), {}


class Cuts:
    def __init__(self, world: dict[str, Any]) -> None:
        self.world = world

    client = Host("cl", "cl-netns", "10.0.0.100")

    def drop(self, ordinal: int, sources: list[int], direction: str) -> None:
        self.world["log"].append(("drop", ordinal))
        self.world["log"].append((f"drop {direction} {sorted(sources)}", ordinal))

    def drop_ips(self, ordinal: int, ips: list[str], direction: str, action: str) -> None:
        assert ips == [self.client.ip] and action == RESET
        self.world["log"].append(("refuse clients", ordinal))

    def heal(self) -> None:
        self.world["log"].append(("heal", None))


def _membership_run(
    shape: str,
    ghosts: tuple[int, ...] = (),
    leader: int = 1,
    extra: dict[int, tuple[int, ...]] | None = None,
    always_ack: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, int | None]]]:
    """``membership`` carried out on pods that answer from a table (``ghosts`` listed as
    members whether running or not, ``extra`` by the one pod only; a removal acknowledged when
    three pods are running and not paused, or always), with the first seed that draws
    ``shape``; its detail, and every action in order."""
    seed = next(
        s for s in range(100) if random.Random(f"{s}/victims").choice(MEMBERSHIP_SHAPES) == shape
    )
    world: dict[str, Any] = {"log": [], "leader": leader, "ghosts": ghosts}
    world.update(extra=extra or {}, always_ack=always_ack)
    world["pods"] = [Pod(i, world) for i in range(5)]
    nemesis = Nemesis(
        cast(Network, Cuts(world)),
        cast(list[Replica], world["pods"][:3]),
        [],
        seed=seed,
        log=lambda _: None,
        spares=cast(list[Replica], world["pods"][3:]),
    )
    fault = Fault("membership", 0)
    heal = nemesis._membership(fault, set())
    during = list(world["log"])
    heal()
    return fault.detail, [*during, ("healed", None), *world["log"][len(during) :]]


def test_membership_cuts_the_power_of_the_leader_and_another_during_the_joins() -> None:
    """The ``power`` shape of ``membership``: both new pods are started, then the leader and one
    more old member lose power (nothing is cut off); at the end of the hold they come back
    before the cluster is waited for at five members and scaled down."""
    detail, log = _membership_run("power")
    assert detail["shape"] == "power" and 1 in detail["nodes"] and len(detail["nodes"]) == 2
    assert "cut_off" not in detail and not [a for a in log if a[0] == "drop"]
    started = [log.index(("start", spare)) for spare in (3, 4)]
    lost = [log.index(("power_loss", i)) for i in detail["nodes"]]
    assert max(started) < min(lost) < log.index(("healed", None))
    back = [log.index(("start", i)) for i in detail["nodes"]]
    assert log.index(("healed", None)) < min(back) and max(back) < log.index(("stop", 4))
    assert len(detail["members_at_five"]) == 5 and len(detail["members_after"]) == 3


def test_membership_cuts_the_power_of_the_leader_and_another_during_the_first_removal() -> None:
    """The ``power-remove`` shape: the joins undisturbed, the last pod stopped and its removal
    sent, then the leader and one more old member lose power and come back before the second
    removal; the acknowledged removal held, so nothing is recorded as lost."""
    detail, log = _membership_run("power-remove")
    assert detail["shape"] == "power-remove" and "nodes" not in detail and "cut_off" not in detail
    nodes = detail["power_remove_nodes"]
    assert 1 in nodes and len(nodes) == 2 and detail["power_remove_answer"] == 200
    lost = [log.index(("power_loss", i)) for i in nodes]
    assert log.index(("healed", None)) < log.index(("stop", 4)) < log.index(("remove", 1))
    assert log.index(("remove", 1)) < min(lost)
    back = [log.index(("start", i)) for i in nodes]
    assert max(lost) < min(back) and max(back) < log.index(("stop", 3))
    assert detail["lost"] == [] and len(detail["members_after"]) == 3


def test_a_removal_that_did_not_hold_after_the_power_loss_is_recorded_as_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster still lists the removed pod once the power is back (as a removal entry lost
    with unsynced data would look): ``lost`` says so, and so does the end state. Without the
    check the scale-down's retry would have hidden it."""
    monkeypatch.setattr(nemesis_module, "SETTLE_S", 0.2)
    detail, _ = _membership_run("power-remove", ghosts=(4,))
    assert len(detail["lost"]) == 5, detail["lost"]
    assert "acknowledged removal of mcp-mesh-registry-4" in detail["lost"][0]
    assert "not the old" in detail["lost"][1]
    assert [line.split()[1] for line in detail["lost"][2:]] == ["0", "1", "2"]  # each lists 4


def test_membership_cuts_off_old_members_and_cuts_the_power_of_leader_and_joiners() -> None:
    """The ``power-joiners`` shape: at five members the two old members other than the leader
    are cut off and refuse the clients, then the leader and both new members lose power, the
    cut is healed while the power is off, and the three come back (ready) before the
    scale-down stops a pod: the old leader last, once the four others have a leader."""
    detail, log = _membership_run("power-joiners")
    assert detail["shape"] == "power-joiners" and "nodes" not in detail
    assert detail["power_joiners_nodes"] == [1, 3, 4] and detail["isolated"] == [0, 2]
    assert detail["back_ready"] is True
    healed = log.index(("healed", None))
    cut = [log.index((action, i)) for i in (0, 2) for action in ("drop", "refuse clients")]
    killed = [log.index(("kill", i)) for i in (1, 3, 4)]
    lost = [log.index(("power_loss", i)) for i in (1, 3, 4)]
    assert max(killed) < min(lost)  # every process gone before any disk drops its data
    cut_healed = next(i for i, a in enumerate(log) if a == ("heal", None) and i > max(lost))
    back = [log.index(("start", i), healed) for i in (3, 4, 1)]
    assert healed < min(cut) and max(cut) < min(lost) and max(lost) < cut_healed
    assert cut_healed < back[0] < back[1] < back[2] < log.index(("stop", 4))
    assert detail["elected_before_leader_back"] == 0  # the lowest running, before 1 was back
    assert detail["lost"] == [] and "unreached" not in detail
    cuts = {entry for entry in log if entry[0].startswith("drop ")}
    assert cuts == {(f"drop {way} [1, 3, 4]", i) for i in (0, 2) for way in ("input", "output")}


def test_when_a_new_member_leads_one_old_member_loses_power_with_the_joiners() -> None:
    detail, log = _membership_run("power-joiners", leader=4)
    powered = detail["power_joiners_nodes"]
    assert len(powered) == 3 and {3, 4} <= set(powered) and len(detail["isolated"]) == 2
    assert set(powered) | set(detail["isolated"]) == {0, 1, 2, 3, 4}
    assert all(("drop", i) in log and ("power_loss", i) not in log for i in detail["isolated"])


def test_membership_sends_the_first_removal_while_it_cannot_commit_then_cuts_the_power() -> None:
    """The ``stalled-remove`` shape: the last pod stopped, the two running members other than
    the leader and its partner paused, the removal sent to the leader, then the leader and its
    partner lose power, the paused two resume, the two come back; unacknowledged, the removal
    is retried and the scale-down goes on. Nothing is lost and every old member agrees."""
    detail, log = _membership_run("stalled-remove")
    nodes, paused = detail["stalled_nodes"], detail["stalled_paused"]
    assert 1 in nodes and len(nodes) == 2 and 3 in paused and len(paused) == 2
    assert set(nodes) | set(paused) == {0, 1, 2, 3} and detail["stalled_answer"] == 0
    stopped = log.index(("stop", 4))
    stops = [log.index(("SIGSTOP", i)) for i in paused]
    sent = log.index(("remove", 1))
    lost = [log.index(("power_loss", i)) for i in nodes]
    resumed = [log.index(("SIGCONT", i)) for i in paused]
    back = [log.index(("start", i), stopped) for i in nodes]
    assert stopped < min(stops) and max(stops) < sent < min(lost)
    assert max(lost) < min(resumed) and max(resumed) < min(back)
    retried = next(i for i, (action, _) in enumerate(log) if action == "remove" and i > sent)
    assert max(back) < retried < log.index(("stop", 3))
    assert detail["removed_4"] == 200 and detail["lost"] == []


def test_a_removal_acknowledged_while_it_could_not_commit_is_recorded_as_lost() -> None:
    detail, _ = _membership_run("stalled-remove", always_ack=True)
    assert detail["stalled_answer"] == 200
    assert detail["lost"] == [
        "the removal of mcp-mesh-registry-4.mcp-mesh-registry-headless.mcp-mesh.svc.cluster.local"
        f":{RAFT_PORT} was acknowledged with two of five members running"
    ]


def test_an_old_member_that_lists_other_members_at_the_end_is_recorded_as_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first member that answers lists the old three, but replica 2 still lists pod 4:
    the scale-down did not end with one membership."""
    monkeypatch.setattr(nemesis_module, "SETTLE_S", 0.2)
    detail, _ = _membership_run("cut", extra={2: (4,)})
    assert len(detail["members_after"]) == 3
    assert len(detail["lost"]) == 1 and detail["lost"][0].startswith("replica 2 lists members")
    assert "mcp-mesh-registry-4" in detail["lost"][0]


def test_membership_cuts_an_old_member_off_before_the_new_pods_start() -> None:
    detail, log = _membership_run("cut")
    assert detail["shape"] == "cut" and "nodes" not in detail
    assert log.index(("drop", detail["cut_off"])) < log.index(("start", 3))
    assert not [a for a in log if a[0] == "power_loss"]
    assert log.index(("heal", None)) < log.index(("stop", 4))
