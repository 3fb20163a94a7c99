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


def tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and every live descendant of theirs."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(parents.get(pid, []))
    return found


class Meter:
    """CPU seconds spent by a set of server processes (and their descendants) since :meth:`mark`.

    A descendant born after the mark counts in full; one that exited and was reaped counts in
    its parent's cutime/cstime.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._marks: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        seen = {}
        for pid in tree(self.pids):
            try:
                seen[pid] = _with_children(pid)
            except (OSError, IndexError, ValueError):
                continue  # a descendant that exited meanwhile
        return seen

    def mark(self) -> None:
        self._marks = self._now()

    def seconds(self) -> float:
        """CPU seconds summed over every process since :meth:`mark`."""
        now = self._now()
        return sum(now[pid] - self._marks.get(pid, 0.0) for pid in now)


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
