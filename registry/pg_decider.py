"""Which replica decides health, expiry and job sweeps in PostgreSQL mode, and its fence.

The decider is the replica whose dedicated connection holds the session-level advisory lock
:data:`DECIDER_LOCK`. On taking it, the replica increments ``mesh_registry_head.term`` and
notes the new term; its decisions carry that term, and the append transaction
(``registry/pg_log.py``) refuses a decision whose term is not the current one. A lock alone
would not be enough: a replica whose session died (the server released the lock, another took
it) may not have noticed yet and still believe it decides; its late decisions now fail the
term check instead of overruling the new decider's.

Before deciding anything, a new decider applies the log up to the head it read with its term,
so it judges agents on everything its predecessors decided.

Losing the session is noticed by a ``SELECT 1`` every LEADER_ELECTION_RETRY_PERIOD; the server
side drops a silent client through TCP keepalives (set per session below), which bounds how
long a vanished decider keeps the lock from the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from registry.commit import Unavailable
from registry.config import Config
from registry.pg_schema import DB_ERRORS, connect, ensure_schema

log = logging.getLogger(__name__)

DECIDER_LOCK = 0x6D6573685F646563
"""``pg_try_advisory_lock`` key of the decider."""
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
"""Server-side keepalives of the decider's session: a vanished decider's lock is released
within about 11 s."""


class Decider:
    """Holds (or tries for) the decider lock; ``term`` is set while this replica decides."""

    def __init__(self, config: Config, caught_up_to: Callable[[int], Awaitable[None]]) -> None:
        self.config = config
        self._caught_up_to = caught_up_to
        self.term: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-decider")

    async def stop(self) -> None:
        self.term = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def superseded(self, term: int | None) -> None:
        """The database refused a decision of ``term``: stop deciding at once (the session
        check will find the lock gone and reconnect)."""
        if term is not None and self.term == term:
            self.term = None

    async def _run(self) -> None:
        period = self.config.retry_period
        while True:
            try:
                await self._hold()
            except DB_ERRORS as exc:
                if self.term is not None:
                    log.warning(
                        "decider session lost", extra={"term": self.term, "reason": str(exc)}
                    )
            except Unavailable as exc:
                log.warning("decider could not catch up", extra={"reason": str(exc)})
            finally:
                self.term = None
            await asyncio.sleep(period)

    async def _hold(self) -> None:
        """Try for the lock until it is had, then decide while the session lives."""
        timeout = self.config.write_timeout
        period = self.config.retry_period
        conn = await connect(self.config, timeout, KEEPALIVES)
        try:
            await ensure_schema(conn)
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", DECIDER_LOCK, timeout=timeout
            ):
                await asyncio.sleep(period)
            row = await conn.fetchrow(
                "UPDATE mesh_registry_head SET term = term + 1, decider = $1 RETURNING term, idx",
                self.config.instance_id,
                timeout=timeout,
            )
            await self._caught_up_to(row["idx"])
            self.term = row["term"]
            log.info("deciding health and sweeps", extra={"term": self.term})
            while self.term is not None:
                await asyncio.sleep(period)
                await conn.fetchval("SELECT 1", timeout=timeout)
        finally:
            conn.terminate()
