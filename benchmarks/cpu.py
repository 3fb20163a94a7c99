"""Server CPU time from ``/proc``: per process, and summed over a system's processes per write.

Two shared cores blur throughput (a busy neighbour takes cycles from client and servers
alike), but not the CPU a server spends per acknowledged write: that is the figure S1 compares
across our cluster, the Go registry and etcd. A process's CPU is utime + stime of
``/proc/<pid>/stat`` (every thread), plus cutime + cstime (children it has waited for), and a
system's is the sum over its processes and their live descendants, so a helper process a
server starts would be counted too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on)."""
    # The command name (field 2) may hold spaces and parentheses; the fields after its last
    # ")" are fixed: state is fields[0], ppid fields[1], utime fields[11] ... cstime fields[14].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _with_children(pid: int) -> float:
    fields = _stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def _parents() -> dict[int, int]:
    """Every live process's parent, from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
    return parents


def tree(pids: Iterable[int], parents: dict[int, int] | None = None) -> list[int]:
    """``pids`` and every live descendant of theirs (``parents``: a reading of ``_parents``)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in (_parents() if parents is None else parents).items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


class Meter:
    """CPU seconds spent by a set of server processes (and their descendants) since :meth:`mark`.

    A descendant born after the mark counts in full. One that exited and was reaped by a
    process of the set counts in its parent's cutime/cstime (or, its parent gone too, in the
    nearest ancestor's that is left), which then holds all of its CPU, from before the mark
    too: that part (its reading at the mark) is taken off again, or a PostgreSQL backend
    ending during a phase would count its whole life in it. A descendant reaped by a process
    outside the set (reparented to init) is not counted after it exits.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._marks: dict[int, float] = {}
        self._parents: dict[int, int] = {}

    def _now(self) -> tuple[dict[int, float], dict[int, int]]:
        parents = _parents()
        seen = {}
        for pid in tree(self.pids, parents):
            try:
                seen[pid] = _with_children(pid)
            except (OSError, IndexError, ValueError):
                continue  # a descendant that exited meanwhile
        return seen, {pid: parents[pid] for pid in seen if pid in parents}

    def mark(self) -> None:
        self._marks, self._parents = self._now()

    def seconds(self) -> float:
        """CPU seconds summed over every process since :meth:`mark`."""
        now, _ = self._now()
        grown = sum(now[pid] - self._marks.get(pid, 0.0) for pid in now)
        reaped = sum(
            mark
            for pid, mark in self._marks.items()
            if pid not in now and self._reaped_within(pid, now)
        )
        return grown - reaped

    def _reaped_within(self, pid: int, now: dict[int, float]) -> bool:
        """Whether the nearest ancestor (as of the mark) of exited ``pid`` still alive is one
        of the set's: that one's cutime/cstime holds ``pid``'s CPU."""
        parent = self._parents.get(pid)
        while parent is not None and parent not in now:
            parent = self._parents.get(parent)
        return parent is not None


def acknowledged(statuses: dict[str, int] | dict[int, int]) -> int:
    """Requests answered 2xx: the writes the server acknowledged."""
    return sum(count for status, count in statuses.items() if 200 <= int(status) < 300)


def per_write(
    cpu_seconds_total: float, writes: int, seconds: float
) -> dict[str, float | int | None]:
    """The row fields S1 reports: total server CPU, acknowledged writes (and per second over
    the phase's ``seconds``), CPU ms per acknowledged write."""
    return {
        "server_cpu_seconds_total": round(cpu_seconds_total, 2),
        "acknowledged_writes": writes,
        "writes_per_second": round(writes / seconds, 1) if seconds else 0.0,
        "cpu_ms_per_write": round(cpu_seconds_total * 1000 / writes, 3) if writes else None,
    }
