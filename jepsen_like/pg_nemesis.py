"""The PostgreSQL topology's faults: the shared database, and replicas with no Raft.

In this topology (``--topology postgresql``) the replicas share one log in a PostgreSQL table
and never talk to each other, so the Raft topology's partitions between replicas, lost disks
(a replica has none: no PVC), power losses, membership changes and the stranger on RAFT_PORT
mean nothing here; the faults that do (``--nemesis`` names):

- ``pg-kill``: SIGKILL the postmaster and every backend; restarted at the end of the window,
  which is crash recovery (the WAL replayed; ``fsync=on``, so what committed is there);
- ``pg-pause``: SIGSTOP every process of the server, SIGCONT at the end: connections stay
  up and hang, which only timeouts end;
- ``db-partition``: one replica cut off from the database by nftables in its namespace, in
  three shapes: ``both`` ways, ``replies`` (the replica hears nothing from the database but
  its packets arrive: an append may commit unanswered, an outcome the replica cannot know)
  and ``requests`` (nothing it sends arrives);
- ``client-partition``: one replica cut off from the clients, ``both`` ways or ``replies``
  only (requests on kept-alive connections arrive and are carried out, answers are lost);
- ``kill``: SIGKILL a replica, restart it at the end (a Deployment's pod restarting);
- ``pause``: SIGSTOP a replica (``any``, or the ``decider``), SIGCONT at the end;
- ``kill-decider``: SIGKILL the replica that reports itself decider (GET /api/v1/cluster,
  role ``decider``), restart it at the end; the nemesis watches for another replica to report
  itself decider with a higher term (``successor`` in the fault's record), which the evidence
  rule requires (jepsen_like/checkers.py).

Every partition has an nftables table of its own (``jepsen<planned index>``), so two active
at once heal one at a time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from jepsen_like.db import Replica, decider
from jepsen_like.hosts import Network
from jepsen_like.nemesis import Fault, Nemesis, Planned
from jepsen_like.pg_server import PgServer

PG_KINDS = (
    "pg-kill",
    "pg-pause",
    "db-partition",
    "client-partition",
    "kill",
    "pause",
    "kill-decider",
)
SERVER_KINDS = frozenset({"pg-kill", "pg-pause"})
FIND_DECIDER_S = 10.0
"""How long ``kill-decider`` looks for a decider before it gives up (recorded: no victim)."""
TAKEOVER_S = 30.0
"""How long after the kill the nemesis watches for a successor (a decider paused or cut off
from the database keeps the lock until the server ends its session: about 10 s)."""


def pg_compatible(first: str, second: str) -> bool:
    """Whether ``second`` may start while ``first`` is active. The server is one: it is not
    killed while paused or paused while dead. ``kill-decider`` is never the second of a pair
    (the decider may be the replica the first fault is about) and never pairs with a fault of
    the server (no replica can take over while the database is away, which is the evidence it
    is there for). Partitions have a table each, so any two may overlap."""
    pair = {first, second}
    if pair <= SERVER_KINDS:
        return False
    return second != "kill-decider" and not ("kill-decider" in pair and pair & SERVER_KINDS)


class PgNemesis(Nemesis):
    """:class:`Nemesis` for the PostgreSQL topology: the schedule's kinds are :data:`PG_KINDS`."""

    def __init__(
        self,
        network: Network,
        replicas: list[Replica],
        schedule: list[Planned],
        seed: int,
        log: Callable[[str], None],
        server: PgServer,
    ) -> None:
        super().__init__(network, replicas, schedule, seed, log)
        self.server = server
        self._watchers: list[threading.Thread] = []

    def heal_all(self) -> None:
        """End of run: no rule anywhere, the server up, every replica running and resumed;
        the takeover watchers have finished (their findings are in the faults' records)."""
        self.network.heal_everything()
        self.server.resume()
        self.server.start()
        for replica in self.replicas:
            replica.signal(signal.SIGCONT)
            if not replica.alive():
                replica.start()
        for watcher in self._watchers:
            watcher.join(TAKEOVER_S + 10)

    def _pg_kill(self, fault: Fault, _busy: set[int]) -> Callable[[], None]:
        fault.detail = {"pids": len(self.server.kill())}

        def recover() -> None:
            started = time.monotonic()
            self.server.start()
            fault.detail["recovery_s"] = round(time.monotonic() - started, 3)

        return recover

    def _pg_pause(self, fault: Fault, _busy: set[int]) -> Callable[[], None]:
        fault.detail = {"pids": len(self.server.pause())}
        return self.server.resume

    def _db_partition(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        assert self.network.database is not None
        shape = self.rng.choice(["both", "replies", "requests"])
        victim = self._victim(busy)
        directions = {"both": ["input", "output"], "replies": ["input"], "requests": ["output"]}
        return self._cut(fault, victim, self.network.database.ip, directions[shape], shape)

    def _client_partition(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        shape = self.rng.choice(["both", "replies"])
        victim = self._victim(busy)
        directions = {"both": ["input", "output"], "replies": ["output"]}
        return self._cut(fault, victim, self.network.client.ip, directions[shape], shape)

    def _cut(
        self, fault: Fault, victim: int, ip: str, directions: list[str], shape: str
    ) -> Callable[[], None]:
        table = f"jepsen{fault.planned}"
        for direction in directions:
            self.network.drop_ips(victim, [ip], direction, table)
        fault.detail = {"shape": shape, "node": victim}
        return lambda: self.network.heal_table(victim, table)

    def _pause(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        shape = self.rng.choice(["any", "decider"])
        found = None
        if shape == "decider":
            found = decider([r for r in self.replicas if r.ordinal not in busy])
        victim = self.replicas[found[0] if found else self._victim(busy)]
        victim.signal(signal.SIGSTOP)
        fault.detail = {"shape": shape, "node": victim.ordinal, "decider": found is not None}
        return lambda: victim.signal(signal.SIGCONT)

    def _kill_decider(self, fault: Fault, busy: set[int]) -> Callable[[], None]:
        deadline = time.monotonic() + FIND_DECIDER_S
        found = decider(self.replicas)
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)
            found = decider(self.replicas)
        if found is None:
            victim, term = self.replicas[self._victim(busy)], 0
            fault.detail = {"node": victim.ordinal, "decider": None}
        else:
            victim, term = self.replicas[found[0]], found[1]
            fault.detail = {"node": victim.ordinal, "decider": victim.ordinal, "term": term}
        victim.kill()
        killed_at = time.monotonic_ns()
        if found is not None:
            watcher = threading.Thread(
                target=self._watch_takeover, args=(fault, victim, term, killed_at), daemon=True
            )
            watcher.start()
            self._watchers.append(watcher)
        return victim.start

    def _watch_takeover(self, fault: Fault, victim: Replica, term: int, killed_at: int) -> None:
        """Record the first replica other than ``victim`` seen deciding with a newer term."""
        others = [r for r in self.replicas if r is not victim]
        deadline = time.monotonic() + TAKEOVER_S
        while time.monotonic() < deadline:
            found = decider(others)
            if found is not None and found[1] > term:
                fault.detail["successor"] = found[0]
                fault.detail["successor_term"] = found[1]
                fault.detail["takeover_s"] = round((time.monotonic_ns() - killed_at) / 1e9, 3)
                return
            time.sleep(0.2)
