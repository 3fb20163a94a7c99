"""Faults, scheduled from a seed (same seed, same schedule), then carried out.

``plan`` is a pure function of the kinds, the time limit and the seed: when each fault starts,
how long it lasts, and which faults overlap. Kinds are drawn in rounds, every requested kind
once per round in a shuffled order; the first round is always scheduled in full (every
requested kind happens at least once, even if that runs past the time limit), later rounds
only while they end before it. In each round up to ``overlaps`` pairs of faults overlap: the
second starts while the first is still active (a partition while a node is killed, say), on
a different node. :class:`Nemesis` carries out the schedule; each fault it records in
``faults.json`` names the planned fault it carried out, so the checker can verify that every
scheduled fault happened and every scheduled overlap really overlapped.

Kinds (``--nemesis`` names):

- ``partition``: nftables drops inside the namespaces, in one of four shapes: the leader
  isolated, one random node isolated (majority/minority), a bridge (two nodes that cannot
  see each other but both see the third), one-way (a node that hears nobody but is heard);
- ``kill``: SIGKILL a replica, restart it at the end of the window;
- ``pause``: SIGSTOP a replica, SIGCONT at the end;
- ``restart``: rolling restart in StatefulSet order (highest ordinal first), each waited for;
- ``move``: a replica rescheduled with a new IP (stopped, readdressed, DNS updated, started);
- ``wipe``: a replica's data directory deleted (it must rejoin and resync). One lost disk at
  a time: while a replica whose disk was lost has not been recognised again (caught up and
  counted by the leader), a later ``wipe`` or ``disk-leader`` takes that replica's disk again
  rather than another's, because two members' disks lost at once are a majority's, which a
  3-member cluster does not promise to survive (the registry then refuses to elect a leader
  of two empty members: tests/test_wiped_disk.py);
- ``power``: power lost on one replica, on a majority (the leader and as many others as make
  a majority: the members that counted an entry may all lose what they had not synced while
  one that kept running takes over), or on all at once: every data directory is on
  jepsen_like/lazyfs, so whatever was not fsynced is gone with the processes;
- ``disk-leader``: a follower loses its disk, then the leader dies before it has caught up;
  in the ``paused`` shape the other follower is paused first (so the leader commits with the
  one about to lose its disk) and resumed only after the leader died: the order in which an
  empty member's vote would elect a leader missing acknowledged writes;
- ``stranger``: someone on every replica's RAFT_PORT sending garbage, huge length prefixes,
  pickles that would leave a marker file if unpickled, utility commands with a wrong key, and a
  crowd of idle connections (jepsen_like/stranger.py); a marker, or a member the cluster did
  not have, is recorded as a breach, which makes the run invalid;
- ``membership``: the StatefulSet scaled 3 -> 5 -> 3 with ``podManagementPolicy: Parallel``:
  the two new pods start at once and join one after the other, in one of five shapes: ``cut``,
  one old member cut off from everyone meanwhile; ``power``, the leader and one more old member
  losing power (as in ``power``) while the joins are in flight, back at the end of the hold;
  ``power-remove``, the joins undisturbed, then the leader and one more old member losing power
  while the first removal is in flight or just acknowledged; ``power-joiners``, the joins
  undisturbed, then the two old members other than the leader cut off (refusing the clients)
  while the leader and the new members commit alone, and exactly those three losing power
  (every pod's data directory, the new ones' too, is on lazyfs), the cut healed before the
  power is back; ``stalled-remove``, the joins undisturbed, then the first removal sent while
  the two running members other than the leader and one more old member are paused (so it
  cannot commit), the leader and that member losing power with it in their journals, the
  paused two resumed. Then, the partition healed or the power back, the new pods are removed
  one after the other (``cluster remove``) and stopped with their volumes deleted. What the
  scale-down must show is recorded as ``lost`` (checker ``membership``): a removal
  acknowledged before a power loss that did not hold once the power was back, a removal
  acknowledged that could not have been committed, or a cluster that did not end with its
  old members and no others on every old member.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.db import Replica, leader, wait_ready
from jepsen_like.hosts import RESET, Network, dns_name
from jepsen_like.stranger import RAFT_PORT

KINDS = (
    "partition",
    "kill",
    "pause",
    "restart",
    "move",
    "wipe",
    "power",
    "disk-leader",
    "stranger",
    "membership",
)
MEMBERSHIP_SHAPES = ("cut", "power", "power-remove", "power-joiners", "stalled-remove")
SETTLE_S = 30.0
"""How long the membership is waited for to reach the size a scale step asks for."""
ALONE = ("restart", "power", "disk-leader", "membership")
"""Kinds that touch several replicas at once, so never one of an overlapping pair."""
HOLD_S = (3.0, 6.0)
"""How long a fault lasts."""
GAP_S = (2.0, 4.0)
"""Quiet time before the first fault and between faults."""
OVERLAP_LAG = (0.3, 0.7)
"""When the second fault of a pair starts, as a fraction of the first one's hold."""
RESTART_BUDGET_S = 6.0
"""Time set aside for a rolling restart (about 4.5 s on a 2-core machine), which heals itself."""
TAIL_S = 4.0
"""Later rounds end at least this long before the time limit."""


def compatible(first: str, second: str) -> bool:
    """Whether ``second`` may start while ``first`` is active. A rolling restart touches every
    node; one healing of the nftables tables would end both partitions; two wiped disks are a
    majority's disks, whose loss the registry does not promise to survive; and a new IP would
    slip past a partition's address rules. Power losses and a lost disk followed by a lost
    leader involve several replicas themselves (``ALONE``)."""
    pair = {first, second}
    return (
        not pair & set(ALONE)
        and pair != {"partition", "move"}
        and not (first == second and first in ("partition", "wipe"))
    )


@dataclass(frozen=True)
class Planned:
    """One scheduled fault: ``at`` and ``hold`` in seconds from the nemesis' start;
    ``overlaps`` is the index of the planned fault still active when this one starts."""

    kind: str
    at: float
    hold: float
    overlaps: int | None = None


def plan(
    kinds: list[str],
    time_limit: float,
    seed: int,
    overlaps: int = 1,
    pairs: Callable[[str, str], bool] = compatible,
) -> list[Planned]:
    """The schedule for a run; see the module docstring. ``pairs`` says which kinds may
    overlap (:func:`compatible` for the Raft topology; jepsen_like/pg_nemesis.py has the
    PostgreSQL topology's)."""
    rng = random.Random(f"{seed}/schedule")
    planned: list[Planned] = []
    t = rng.uniform(*GAP_S)
    first_round = True
    while True:
        for slot in _pair_up(rng.sample(kinds, len(kinds)), overlaps, pairs):
            items = _place(slot, t, len(planned), rng)
            end = max(item.at + item.hold for item in items)
            if not first_round and end > time_limit - TAIL_S:
                return planned
            planned += items
            t = end + rng.uniform(*GAP_S)
        first_round = False


def _pair_up(
    round_kinds: list[str], overlaps: int, pairs: Callable[[str, str], bool]
) -> list[tuple[str, ...]]:
    """A round's slots: single faults, and up to ``overlaps`` compatible pairs."""
    slots: list[tuple[str, ...]] = []
    left = list(round_kinds)
    while left:
        first = left.pop(0)
        partner = next((k for k in left if pairs(first, k)), None)
        if partner is not None and sum(len(s) == 2 for s in slots) < overlaps:
            left.remove(partner)
            slots.append((first, partner))
        else:
            slots.append((first,))
    return slots


def _place(slot: tuple[str, ...], t: float, index: int, rng: random.Random) -> list[Planned]:
    first = slot[0]
    hold = RESTART_BUDGET_S if first == "restart" else rng.uniform(*HOLD_S)
    items = [Planned(first, t, hold)]
    if len(slot) == 2:
        lag = rng.uniform(*OVERLAP_LAG) * hold
        items.append(Planned(slot[1], t + lag, rng.uniform(*HOLD_S), overlaps=index))
    return items


@dataclass
class Fault:
    """A fault as carried out: monotonic ns, and the index of the planned fault it was."""

    name: str
    start: int
    end: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    planned: int = -1


class Nemesis:
    def __init__(
        self,
        network: Network,
        replicas: list[Replica],
        schedule: list[Planned],
        seed: int,
        log: Callable[[str], None],
        spares: list[Replica] | None = None,
    ) -> None:
        self.network = network
        self.replicas = replicas
        self.spares = spares or []  # pods above the StatefulSet's size, for ``membership``
        self.schedule = schedule
        self.rng = random.Random(f"{seed}/victims")
        self.log = log
        self.faults: list[Fault] = []
        self.lost_disk: int | None = None
        """A replica whose disk was lost and that the cluster may not have recognised yet."""
        self.again = False
        """Whether the last disk lost was ``lost_disk``'s again (recorded as ``again``)."""

    def run(self) -> None:
        """Carry out the whole schedule. An action that overruns (a slow restart) delays every
        later one by as much, so holds, gaps and overlaps keep their planned shape."""
        events = sorted(
            [(p.at, 1, i) for i, p in enumerate(self.schedule)]
            + [(p.at + p.hold, 0, i) for i, p in enumerate(self.schedule) if p.kind != "restart"]
        )
        started = time.monotonic()
        delay = 0.0
        active: dict[int, tuple[Fault, Callable[[], None]]] = {}
        for at, is_start, index in events:
            due = started + at + delay
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                delay += now - due
            if not is_start:
                fault, heal = active.pop(index)
                heal()
                self._done(fault)
                continue
            kind = self.schedule[index].kind
            fault = Fault(kind, time.monotonic_ns(), planned=index)
            busy = {f.detail["node"] for f, _ in active.values() if "node" in f.detail}
            self.log(f"nemesis: {kind} starting")
            heal = getattr(self, f"_{kind.replace('-', '_')}")(fault, busy)
            if heal is None:
                self._done(fault)
            else:
                active[index] = (fault, heal)

    def _done(self, fault: Fault) -> None:
        fault.end = time.monotonic_ns()
        self.faults.append(fault)
        self.log(f"nemesis: {fault.name} healed {fault.detail}")

    def _victim(self, busy: set[int]) -> int:
        """A replica no active fault is about (a second fault of a pair hits another node)."""
        return self.rng.choice([i for i in range(len(self.replicas)) if i not in busy])

    def _disk_victim(self, candidates: list[int]) -> int:
        """Whose disk to lose: the replica still recovering from an earlier lost disk if there
        is one, even if another fault is about it (see ``wipe`` in the module docstring);
        otherwise one of ``candidates``."""
        if self.lost_disk is not None and not self._recovered(self.lost_disk):
            self.again = True
            return self.lost_disk
        self.lost_disk, self.again = None, False
        return self.rng.choice(candidates)

    def _recovered(self, ordinal: int) -> bool:
        """Whether a replica whose disk was lost is a member in good standing again: it has
        heard from a leader that names its new incarnation, and that leader counts it."""
        replica = self.replicas[ordinal]
        if not replica.alive():
            return False
        status, body = replica.get("/api/v1/cluster")
        if status != 200 or not isinstance(body, dict):
            return False
        if not body.get("recognised") or not body.get("leader"):
            return False
        lead = leader(self.replicas)
        if lead is None:
            return False
        status, view = self.replicas[lead].get("/api/v1/cluster")
        if status != 200 or not isinstance(view, dict):
            return False
        me = f"{dns_name(ordinal)}:{RAFT_PORT}"
        members = view.get("members") or []
        return any(m.get("id") == me and not m.get("catching_up") for m in members) or (
            lead == ordinal
        )

    def heal_all(self) -> None:
        """End of run: no partition, nothing paused, every replica running."""
        self.network.heal()
        for spare in self.spares:
            spare.kill()
        for replica in self.replicas:
            replica.signal(signal.SIGCONT)
            if not replica.alive():
                replica.start()

    # Each fault gets the nodes active faults are about, and returns its healing action, or
    # None when it healed itself already.

    def _partition(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        n = len(self.replicas)
        shape = self.rng.choice(["leader", "isolate", "bridge", "one-way"])
        victim = self._victim(busy)
        if shape == "leader":
            found = leader(self.replicas)
            victim = found if found is not None else victim
        others = [i for i in range(n) if i != victim]
        if shape in ("leader", "isolate"):
            self.network.drop(victim, others, "input")
            self.network.drop(victim, others, "output")
        elif shape == "bridge":
            a, b = others[0], others[-1]
            self.network.drop(a, [b], "input")
            self.network.drop(b, [a], "input")
        else:
            self.network.drop(victim, others, "input")
        fault.detail = {"shape": shape, "node": victim}
        return self.network.heal

    def _kill(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        victim = self.replicas[self._victim(busy)]
        victim.kill()
        fault.detail = {"node": victim.ordinal}
        return victim.start

    def _pause(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        victim = self.replicas[self._victim(busy)]
        victim.signal(signal.SIGSTOP)
        fault.detail = {"node": victim.ordinal}
        return lambda: victim.signal(signal.SIGCONT)

    def _restart(self, fault: Fault, _busy: set[int]) -> None:
        for replica in reversed(self.replicas):
            replica.stop()
            replica.start()
            wait_ready(self.replicas, 30)
        fault.detail = {"order": [r.ordinal for r in reversed(self.replicas)]}

    def _move(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        victim = self.replicas[self._victim(busy)]
        victim.stop()
        fault.detail = {"node": victim.ordinal, "ip": self.network.change_ip(victim.ordinal)}
        return victim.start

    def _wipe(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        free = [i for i in range(len(self.replicas)) if i not in busy]
        victim = self.replicas[self._disk_victim(free)]
        victim.kill()
        victim.wipe()
        self.lost_disk = victim.ordinal
        fault.detail = {"node": victim.ordinal, "again": self.again}
        return victim.start

    def _power(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        shape = self.rng.choice(["one", "majority", "all"])
        if shape == "all":
            victims = self.replicas
        elif shape == "one":
            victims = [self.replicas[self._victim(busy)]]
        else:
            victims = [self.replicas[i] for i in self._majority()]
        Replica.power_loss_together(victims)
        fault.detail = {"shape": shape, "nodes": [v.ordinal for v in victims]}
        if shape == "one":
            fault.detail["node"] = victims[0].ordinal

        def power_back() -> None:
            for victim in victims:
                victim.start()

        return power_back

    def _majority(self) -> list[int]:
        """The leader (a random replica when none is found) and enough others, drawn at
        random, to make a majority of the replicas."""
        found = leader(self.replicas)
        first = found if found is not None else self.rng.randrange(len(self.replicas))
        others = [i for i in range(len(self.replicas)) if i != first]
        return sorted([first, *self.rng.sample(others, len(self.replicas) // 2)])

    def _disk_leader(self, fault: Fault, _busy: set[int]) -> Callable[[], None]:
        found = leader(self.replicas)
        lead = found if found is not None else self.rng.randrange(len(self.replicas))
        followers = [i for i in range(len(self.replicas)) if i != lead]
        wiped = self._disk_victim(followers)
        if wiped == lead:  # no leader was found and the random pick is the recovering replica
            lead = next(i for i in followers if i != wiped)
            followers = [i for i in range(len(self.replicas)) if i != lead]
        other = next(i for i in followers if i != wiped)
        shape = self.rng.choice(["plain", "paused"])
        if shape == "paused":
            self.replicas[other].signal(signal.SIGSTOP)
            time.sleep(self.rng.uniform(0.5, 1.5))  # the leader commits with `wiped` alone
        self.replicas[wiped].kill()
        self.replicas[wiped].wipe()
        self.lost_disk = wiped
        self.replicas[wiped].start()
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.replicas[lead].kill()
        if shape == "paused":
            self.replicas[other].signal(signal.SIGCONT)
        fault.detail = {
            "shape": shape,
            "leader": lead,
            "wiped": wiped,
            "paused": other,
            "again": self.again,
        }
        return self.replicas[lead].start

    def _stranger(self, fault: Fault, _busy: set[int]) -> Callable[[], None]:
        run_dir = self.replicas[0].data_dir.parent
        marker = run_dir / "stranger-got-in"
        members = self._members()
        hold = self.rng.uniform(2.0, 4.0)
        script = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.network.client.netns,
                sys.executable,
                "-m",
                "jepsen_like.stranger",
                str(marker),
                f"{hold:.2f}",
                *[r.host for r in self.replicas],
            ],
            stdout=subprocess.DEVNULL,
            stderr=(run_dir / "stranger.log").open("ab"),
        )
        fault.detail = {"port": RAFT_PORT, "members_before": members}

        def leave() -> None:
            script.wait(timeout=60)
            breach = []
            if marker.exists():
                breach.append("a replica unpickled a stranger's bytes (marker file created)")
            after = self._members()
            strangers = sorted(set(after) - set(members)) if members and after else []
            if strangers:
                breach.append(f"members the cluster did not have: {strangers}")
            fault.detail.update(members_after=after, breach=breach)

        return leave

    def _members(self) -> list[str]:
        """The membership as the first replica that answers reports it (ids of members)."""
        for replica in self.replicas:
            listed = self._listed(replica)
            if listed is not None:
                return listed
        return []

    @staticmethod
    def _listed(replica: Replica) -> list[str] | None:
        """The ids of the members ``replica`` lists, sorted; None when it does not answer."""
        status, body = replica.get("/api/v1/cluster")
        if status == 200 and isinstance(body, dict):
            return sorted(str(m.get("id")) for m in body.get("members") or [])
        return None

    def _membership(self, fault: Fault, _busy: set[int]) -> Callable[[], None]:
        shape = self.rng.choice(MEMBERSHIP_SHAPES)
        fault.detail = {"shape": shape, "joined": [s.ordinal for s in self.spares]}
        if shape == "cut":
            cut = self._victim(set())
            everyone = len(self.replicas) + len(self.spares)
            others = [i for i in range(everyone) if i != cut]
            self.network.drop(cut, others, "input")
            self.network.drop(cut, others, "output")
            fault.detail["cut_off"] = cut
        for spare in self.spares:  # Parallel: every new pod at once
            spare.wipe()
            spare.start()
        powered_off: list[int] = []
        if shape == "power":
            # The joins are in flight (the first being added, or committed and the second on
            # its way): the leader and one more old member lose power, unsynced writes with it.
            time.sleep(self.rng.uniform(0.2, 1.5))
            powered_off = self._majority()
            Replica.power_loss_together([self.replicas[i] for i in powered_off])
            fault.detail["nodes"] = powered_off

        def scale_down() -> None:
            self.network.heal()
            for i in powered_off:
                self.replicas[i].start()
            members = self._wait_members(len(self.replicas) + len(self.spares), SETTLE_S)
            fault.detail["members_at_five"] = members
            if shape == "power-joiners":
                self._power_joiners(fault)
            lost: list[str] = []
            # As k8s/README.md's scale-down: kubectl stops the highest ordinal first, then the
            # operator removes the departed member, then deletes its PVC.
            for spare in reversed(self.spares):
                spare.stop()
                if shape == "power-remove" and spare is self.spares[-1]:
                    lost += self._remove_losing_power(spare, fault)
                if shape == "stalled-remove" and spare is self.spares[-1]:
                    lost += self._remove_stalled(spare, fault)
                fault.detail[f"removed_{spare.ordinal}"] = self._remove(spare)
                spare.wipe()
            after = self._wait_members(len(self.replicas), SETTLE_S)
            old = sorted(f"{dns_name(r.ordinal)}:{RAFT_PORT}" for r in self.replicas)
            if after != old:
                lost.append(f"the scale-down ended with members {after}, not the old {old}")
            for ordinal, listed in self._agreed_members(old, SETTLE_S).items():
                lost.append(f"replica {ordinal} lists members {listed}, not the old {old}")
            fault.detail.update(members_after=after, lost=lost)

        return scale_down

    def _power_joiners(self, fault: Fault) -> None:
        """The joins done, the two old members that are not the leader are cut off from the
        other three and reset the clients' connections, so the workload's requests to them
        fail at once (a kept-alive one ends unknown) instead of waiting out their timeout,
        and the next request goes to a replica drawn again: what is committed meanwhile was
        counted by the leader and the new members alone. (When a new member leads, the three
        are it, the other new member and one old member drawn at random, and the other two
        old members are cut off.) Then exactly those three lose power at once (the new
        members' disks are on lazyfs too), so an entry one of them acknowledged before syncing
        it is gone from its disk; the cut is healed (two of five cannot elect anyone, and with
        shorter logs than the three's they must not be elected once those are back); then
        the power comes back, the leader's pod last: once the four others have elected a
        leader, or after ``SETTLE_S``. Checker ``lost_writes`` judges what survived.
        ``power_joiners_nodes`` and ``isolated`` say who was hit, ``alone_ns`` when the three
        committed alone (the history's clock); with fewer than five members or no leader
        found, the shape is ``unreached`` (checker ``membership`` then wants other evidence)."""
        everyone = [*self.replicas, *self.spares]  # ordinals are indices
        if len(fault.detail.get("members_at_five", [])) != len(everyone):
            fault.detail["unreached"] = "the cluster did not reach five members"
            return
        found = self._wait_leader(everyone, SETTLE_S)
        if found is None:
            fault.detail["unreached"] = "no leader among the five members"
            return
        powered = {found, *(s.ordinal for s in self.spares)}
        old = [r.ordinal for r in self.replicas if r.ordinal not in powered]
        if len(powered) < 3:  # a new member leads: one old member more makes the three
            powered.add(self.rng.choice(old))
        isolated = [i for i in old if i not in powered]
        for i in isolated:
            self.network.drop(i, sorted(powered), "input")
            self.network.drop(i, sorted(powered), "output")
            self.network.drop_ips(i, [self.network.client.ip], "input", action=RESET)
        alone = time.monotonic_ns()
        time.sleep(self.rng.uniform(1.0, 2.0))
        fault.detail["alone_ns"] = [alone, time.monotonic_ns()]
        Replica.power_loss_together([everyone[i] for i in sorted(powered)])
        self.network.heal()
        time.sleep(self.rng.uniform(0.5, 1.5))
        # The leader's pod comes back last, once the four others have elected a leader: the
        # two isolated members, behind, must not win with the votes of the other two.
        first = sorted(powered - {found})
        for i in first:
            everyone[i].start()
        elected = self._wait_leader([everyone[i] for i in [*isolated, *first]], SETTLE_S)
        everyone[found].start()
        # Ready again before the scale-down stops a new pod: stopped while still starting, it
        # would never have voted with what it kept.
        ready = wait_ready([everyone[i] for i in sorted(powered)], SETTLE_S)
        fault.detail.update(
            power_joiners_nodes=sorted(powered),
            isolated=isolated,
            elected_before_leader_back=elected,
            back_ready=ready,
        )

    @staticmethod
    def _wait_leader(replicas: list[Replica], timeout: float) -> int | None:
        """The ordinal of a leader among ``replicas`` once one reports itself, or None."""
        deadline = time.monotonic() + timeout
        found = leader(replicas)
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)
            found = leader(replicas)
        return found

    def _remove_losing_power(self, spare: Replica, fault: Fault) -> list[str]:
        """Send the removal of the stopped ``spare`` once; while it is in flight or just
        acknowledged, the leader and one more old member lose power (``power_remove_nodes``).
        Once they are back and the cluster has settled, an acknowledged removal must hold: the
        member listed again is what a removal entry lost with unsynced data would look like."""
        member = f"{dns_name(spare.ordinal)}:{RAFT_PORT}"
        found = leader(self.replicas)
        target = self.replicas[found if found is not None else 0]
        answer = self._send_removal(target, member)
        time.sleep(self.rng.uniform(0.05, 0.4))  # the request process takes ~50 ms to start
        powered_off = self._majority()
        Replica.power_loss_together([self.replicas[i] for i in powered_off])
        answered = answer()
        for i in powered_off:
            self.replicas[i].start()
        fault.detail.update(power_remove_nodes=powered_off, power_remove_answer=answered)
        if answered != 200:
            return []  # outcome unknown: the removal below settles it either way
        members = self._wait_members(len(self.replicas) + len(self.spares) - 1, SETTLE_S)
        if member in members:
            return [f"the acknowledged removal of {member} was lost with the power: {members}"]
        return []

    def _remove_stalled(self, spare: Replica, fault: Fault) -> list[str]:
        """Send the removal of the stopped ``spare`` while it cannot commit: of the four
        running members, the two that are neither the leader nor the old member about to lose
        power with it are paused, so the leader appends the removal (and may send it to that
        other one) but cannot count three of five. Then those two lose power, the paused two
        are resumed, and the two come back: the removal sits uncommitted in the journals of
        members that lost power, to be committed or cut off by whoever leads next (pysyncobj
        applies a membership change when it is appended and reverses it when it is cut off).
        An acknowledgement would be a lie, so it is recorded as lost; otherwise the outcome is
        unknown and the retry below settles it, and every old member must end up listing the
        same members (checked at the end of the scale-down). ``stalled_nodes`` (the two that
        lost power), ``stalled_paused`` and ``stalled_answer`` say what happened."""
        member = f"{dns_name(spare.ordinal)}:{RAFT_PORT}"
        everyone = [*self.replicas, *self.spares]  # ordinals are indices
        running = [r for r in everyone if r is not spare and r.alive()]
        found = self._wait_leader(running, SETTLE_S)
        if found is None:
            fault.detail["unreached"] = "no leader among the running members"
            return []
        partner = self.rng.choice([r.ordinal for r in self.replicas if r.ordinal != found])
        paused = [r.ordinal for r in running if r.ordinal not in (found, partner)]
        for i in paused:
            everyone[i].signal(signal.SIGSTOP)
        answer = self._send_removal(everyone[found], member)
        time.sleep(self.rng.uniform(0.3, 0.8))  # the request process takes ~50 ms to start
        powered_off = sorted([found, partner])
        Replica.power_loss_together([everyone[i] for i in powered_off])
        for i in paused:
            everyone[i].signal(signal.SIGCONT)
        answered = answer()
        for i in powered_off:
            everyone[i].start()
        fault.detail.update(
            stalled_nodes=powered_off, stalled_paused=paused, stalled_answer=answered
        )
        if answered == 200:
            return [f"the removal of {member} was acknowledged with two of five members running"]
        return []

    @staticmethod
    def _send_removal(target: Replica, member: str) -> Callable[[], int]:
        """Send ``DELETE /api/v1/cluster/members/{member}`` to ``target`` from a thread, so a
        fault can strike while it is in flight; the call returned waits for its status (0
        when no answer came)."""
        answers: list[int] = []
        path = f"/api/v1/cluster/members/{member}"
        sender = threading.Thread(
            target=lambda: answers.append(target.request("DELETE", path, 10.0)[0])
        )
        sender.start()

        def answer() -> int:
            sender.join()
            return answers[0] if answers else 0

        return answer

    def _agreed_members(self, expected: list[str], timeout: float) -> dict[int, object]:
        """Wait until every old member lists ``expected``; those that still do not (their
        lists, or None for no answer) when ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            differing: dict[int, object] = {}
            for replica in self.replicas:
                listed = self._listed(replica)
                if listed != expected:
                    differing[replica.ordinal] = listed
            if not differing or time.monotonic() >= deadline:
                return differing
            time.sleep(0.5)

    def _remove(self, spare: Replica) -> int:
        """``mcp-mesh-registry cluster remove`` through any answering member; the status."""
        member = f"{dns_name(spare.ordinal)}:{RAFT_PORT}"
        deadline = time.monotonic() + 30.0
        status = 0
        while time.monotonic() < deadline:
            for replica in self.replicas:
                status, _ = replica.request("DELETE", f"/api/v1/cluster/members/{member}", 10.0)
                if status in (200, 204, 404):
                    return status
            time.sleep(0.5)
        return status

    def _wait_members(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        members = self._members()
        while len(members) != count and time.monotonic() < deadline:
            time.sleep(0.5)
            members = self._members()
        return members
