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

Losing the session is noticed by a ``SELECT 1`` every LEADER_ELECTION_RETRY_PERIOD. The server
drops a vanished decider's session through TCP keepalives and a paused one's through
``idle_session_timeout`` (``registry/pg_schema.py``), which bounds how long either keeps the
lock from the others. A decider whose own log connection is down could decide nothing (its
decisions cannot be appended), so it lets the lock go until the log is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from registry.commit import Unavailable
from registry.config import Config
from registry.pg_schema import DB_ERRORS, connect, drop_when_idle, ensure_schema, reason

log = logging.getLogger(__name__)

DECIDER_LOCK = 0x6D6573685F646563
"""``pg_try_advisory_lock`` key of the decider."""
IDLE_PERIODS = 5
"""Session checks a paused decider may miss before the server ends its session."""


class Decider:
    """Holds (or tries for) the decider lock; ``term`` is set while this replica decides."""

    def __init__(
        self,
        config: Config,
        caught_up_to: Callable[[int], Awaitable[None]],
        log_connected: asyncio.Event,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.config = config
        self._on_fatal = on_fatal
        self._caught_up_to = caught_up_to
        self._log_connected = log_connected
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
                        "decider session lost", extra={"term": self.term, "reason": reason(exc)}
                    )
            except Unavailable as exc:
                log.warning("decider could not catch up", extra={"reason": reason(exc)})
            except Exception as exc:  # tables not as expected, or a bug: never decide silently
                log.critical("decider failed; stopping", exc_info=exc)
                self._on_fatal(exc)
                return
            finally:
                self.term = None
            await asyncio.sleep(period)

    async def _hold(self) -> None:
        """Try for the lock until it is had, then decide while the session (and this
        replica's log connection) lives."""
        timeout = self.config.write_timeout
        period = self.config.retry_period
        conn = await connect(self.config, timeout, "decider")
        try:
            await drop_when_idle(conn, IDLE_PERIODS * period, timeout)
            await ensure_schema(conn, timeout)
            while True:
                # The session stays busy (drop_when_idle) while the log is down.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._log_connected.wait(), period)
                if self._log_connected.is_set() and await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", DECIDER_LOCK, timeout=timeout
                ):
                    break
                if self._log_connected.is_set():
                    await asyncio.sleep(period)
                else:
                    await conn.fetchval("SELECT 1", timeout=timeout)
            row = await conn.fetchrow(
                "UPDATE mesh_registry_head SET term = term + 1, decider = $1 RETURNING term, idx",
                self.config.instance_id,
                timeout=timeout,
            )
            await self._caught_up_to(row["idx"])
            self.term = row["term"]
            log.info("deciding health and sweeps", extra={"term": self.term})
            while self.term is not None and self._log_connected.is_set():
                await asyncio.sleep(period)
                await conn.fetchval("SELECT 1", timeout=timeout)
            if self.term is not None:
                log.warning("the log's connection is down; no longer deciding")
        finally:
            conn.terminate()
