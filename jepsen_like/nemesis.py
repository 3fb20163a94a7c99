"""Faults, scheduled at random from a seed (same seed, same schedule).

Each fault starts, lasts a few seconds while the clients work, and is healed; between faults
the cluster gets a few quiet seconds. Kinds (``--nemesis`` names):

- ``partition``: nftables drops inside the namespaces, in one of four shapes: the leader
  isolated, one random node isolated (majority/minority), a bridge (two nodes that cannot
  see each other but both see the third), one-way (a node that hears nobody but is heard);
- ``kill``: SIGKILL a replica, restart it at the end of the window;
- ``pause``: SIGSTOP a replica, SIGCONT at the end;
- ``restart``: rolling restart in StatefulSet order (highest ordinal first), each waited for;
- ``move``: a replica rescheduled with a new IP (stopped, readdressed, DNS updated, started);
- ``wipe``: a replica's data directory deleted (it must rejoin and resync).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.db import Replica, leader, wait_ready
from jepsen_like.hosts import Network

KINDS = ("partition", "kill", "pause", "restart", "move", "wipe")


@dataclass
class Fault:
    name: str
    start: int
    end: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class Nemesis:
    def __init__(
        self,
        network: Network,
        replicas: list[Replica],
        kinds: list[str],
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        self.network = network
        self.replicas = replicas
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.log = log
        self.faults: list[Fault] = []

    def run(self, stop_at: float) -> None:
        while time.monotonic() < stop_at - 4:
            time.sleep(self.rng.uniform(2.0, 4.0))
            if time.monotonic() >= stop_at - 4:
                break
            kind = self.rng.choice(self.kinds)
            hold = self.rng.uniform(3.0, 6.0)
            fault = Fault(kind, time.monotonic_ns())
            self.log(f"nemesis: {kind} starting")
            heal = getattr(self, f"_{kind}")(fault, hold)
            if heal is not None:
                time.sleep(min(hold, max(0.0, stop_at - time.monotonic())))
                heal()
            fault.end = time.monotonic_ns()
            self.faults.append(fault)
            self.log(f"nemesis: {kind} healed {fault.detail}")

    def heal_all(self) -> None:
        """End of run: no partition, nothing paused, every replica running."""
        self.network.heal()
        for replica in self.replicas:
            replica.signal(signal.SIGCONT)
            if not replica.alive():
                replica.start()

    # Each fault returns its healing action, or None when it healed itself already.

    def _partition(self, fault: Fault, _hold: float) -> Callable[[], None]:
        n = len(self.replicas)
        shape = self.rng.choice(["leader", "isolate", "bridge", "one-way"])
        victim = self.rng.randrange(n)
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

    def _kill(self, fault: Fault, _hold: float) -> Callable[[], None]:
        victim = self.replicas[self.rng.randrange(len(self.replicas))]
        victim.kill()
        fault.detail = {"node": victim.ordinal}
        return victim.start

    def _pause(self, fault: Fault, _hold: float) -> Callable[[], None]:
        victim = self.replicas[self.rng.randrange(len(self.replicas))]
        victim.signal(signal.SIGSTOP)
        fault.detail = {"node": victim.ordinal}
        return lambda: victim.signal(signal.SIGCONT)

    def _restart(self, fault: Fault, _hold: float) -> None:
        for replica in reversed(self.replicas):
            replica.stop()
            replica.start()
            wait_ready(self.replicas, 30)
        fault.detail = {"order": [r.ordinal for r in reversed(self.replicas)]}

    def _move(self, fault: Fault, _hold: float) -> Callable[[], None]:
        victim = self.replicas[self.rng.randrange(len(self.replicas))]
        victim.stop()
        fault.detail = {"node": victim.ordinal, "ip": self.network.change_ip(victim.ordinal)}
        return victim.start

    def _wipe(self, fault: Fault, _hold: float) -> Callable[[], None]:
        victim = self.replicas[self.rng.randrange(len(self.replicas))]
        victim.kill()
        victim.wipe()
        fault.detail = {"node": victim.ordinal}
        return victim.start
