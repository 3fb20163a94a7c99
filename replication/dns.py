"""Peer names resolved off the tick thread.

pysyncobj resolves a peer's name inside its tick thread: ``TCPNode.ip`` asks its global
``DnsCachingResolver``, which calls ``getaddrinfo`` whenever its cached answer is older than
``dnsCacheTime`` (``dnsFailCacheTime`` after a failure). A resolver that takes seconds to answer
(a DNS server gone, a search-domain timeout, a name of a pod being rescheduled) then freezes
heartbeats, elections and acknowledgements for every peer for that long.

:class:`BackgroundResolver` takes its place (:func:`install`; pysyncobj looks the resolver up
at every call). ``resolve``, what pysyncobj calls, only reads the cache: when the answer for a
name is stale it starts a lookup on a thread of its own (one per name at a time) and answers
with what it had. Until a name's first answer arrives that is None, which pysyncobj takes as
"cannot connect now" and retries after ``connectionRetryTime``. The utility commands
(``replication/utility.py``, on executor threads, where blocking is fine) do not use it: they
resolve the name themselves as they connect (``socket.create_connection``).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading

import pysyncobj.dns_resolver
from pysyncobj.monotonic import monotonic

log = logging.getLogger(__name__)

_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, None: None}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class BackgroundResolver:
    """pysyncobj's resolver interface (``resolve``, ``setTimeouts``, ``setPreferredAddrFamily``)
    over a cache that lookup threads fill. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, list[str]]] = {}  # name -> (asked at, addresses)
        self._asking: set[str] = set()
        self._cache_time = 600.0  # pysyncobj's defaults until SyncObj sets its conf's
        self._fail_cache_time = 30.0
        self._family: int | None = socket.AF_INET

    def setTimeouts(self, cacheTime: float, failCacheTime: float) -> None:
        self._cache_time, self._fail_cache_time = cacheTime, failCacheTime

    def setPreferredAddrFamily(self, preferredAddrFamily: str | None) -> None:
        self._family = _FAMILIES[preferredAddrFamily]

    def resolve(self, hostname: str) -> str | None:
        """Tick thread: an address of ``hostname`` from the cache, never waiting for DNS."""
        if _is_ip(hostname):
            return hostname
        with self._lock:
            asked, addresses = self._answers.get(hostname, (None, []))
            age_limit = self._cache_time if addresses else self._fail_cache_time
            stale = asked is None or monotonic() - asked > age_limit
            if stale and hostname not in self._asking:
                self._asking.add(hostname)
                threading.Thread(
                    target=self._refresh, args=(hostname,), name="dns-lookup", daemon=True
                ).start()
        return random.choice(addresses) if addresses else None

    def _refresh(self, hostname: str) -> None:
        try:
            self._query(hostname)
        finally:
            with self._lock:
                self._asking.discard(hostname)

    def _query(self, hostname: str) -> list[str]:
        """Ask DNS; on failure keep the last good answer (as pysyncobj's resolver does)."""
        try:
            infos = socket.getaddrinfo(hostname, None)
        except OSError as exc:
            log.warning("failed to resolve a peer", extra={"host": hostname, "error": str(exc)})
            infos = []
        preferred = [info[4][0] for info in infos if info[0] == self._family]
        found = sorted({str(address) for address in preferred or [i[4][0] for i in infos]})
        with self._lock:
            previous = self._answers.get(hostname, (0.0, []))[1]
            addresses = found or previous
            self._answers[hostname] = (monotonic(), addresses)
        return addresses


RESOLVER = BackgroundResolver()


def install() -> None:
    """Make pysyncobj (TCPNode.ip, its transport) resolve through :data:`RESOLVER`."""
    pysyncobj.dns_resolver._g_resolver = RESOLVER
