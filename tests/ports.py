"""Loopback ports for the servers tests start, taken from outside the ephemeral range.

Binding port 0 finds a free port in the kernel's ephemeral range, the range it also draws
every outgoing connection's source port from. Between that probe and the server's own
bind, a connection among the test's replicas (or their agents) can take the port as its
source: CI saw a registry's RAFT_PORT "address already in use" that way. Ports outside the
range are never given to outgoing connections, so one that binds now stays free until the
test's server takes it. Each port is handed out once per process, from a start that depends
on the process id so that two test runs on one machine rarely probe the same ports.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

_LOWEST = 10000
"""Below this are ports that local services (and podman's published ports) tend to hold."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _candidates() -> Iterator[int]:
    low, high = _ephemeral_range()
    ports = [*range(_LOWEST, max(_LOWEST, low)), *range(high + 1, 65536)]
    if not ports:
        raise RuntimeError(f"no ports outside the ephemeral range {low}-{high}")
    start = (os.getpid() * 7919) % len(ports)
    for offset in range(len(ports)):
        yield ports[(start + offset) % len(ports)]


_unused = _candidates()


def free_port() -> int:
    """A loopback TCP port no one holds now and no outgoing connection can take meanwhile."""
    for port in _unused:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return port
    raise RuntimeError("every port outside the ephemeral range has been handed out")
