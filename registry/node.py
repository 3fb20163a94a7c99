"""One registry node: storage, view, write path, liveness and projections, wired together.

The HTTP layer receives a started :class:`Node` and never builds any of these itself, so tests
and the CLI assemble the same thing the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from registry import events
from registry.availability import RequiredLoop
from registry.commit import Committed, LocalLog, Proposer, StateMachine, restore_view
from registry.config import Config
from registry.gc_pauses import GcPauses
from registry.health import HealthMonitor, Liveness
from registry.job_sweep import JobSweeper, Leases
from registry.limits import Admission
from registry.metrics import Metrics
from registry.sqlite_projection import SqliteProjection
from registry.store import Store
from registry.timefmt import now_ms
from registry.view import HEALTHY, View

if TYPE_CHECKING:  # imported where PostgreSQL mode starts: asyncpg only when it is used
    from registry.pg_projection import PgProjection

log = logging.getLogger(__name__)


class Node:
    """Everything one registry process holds; build with :meth:`open`, then :meth:`start`."""

    def __init__(self, config: Config, store: Store | None, machine: StateMachine) -> None:
        self.config = config
        self.store = store
        self.machine = machine
        self.view = machine.view
        postgres = config.database_type == "postgresql"
        # Heartbeats reach any replica; only one decides health, so the others forward ids.
        self.liveness = Liveness(forward=config.enable_leader_election or postgres)
        self.admission = Admission(config.limits)
        self.metrics = Metrics(machine)
        self.metrics.insecure_key.set(1 if config.insecure_key else 0)
        self.gc_pauses = GcPauses(self.metrics.gc_pause)
        self.fatal: asyncio.Future[BaseException] | None = None
        self._requirements_checked = asyncio.Lock()
        """Held from the loop check of a registration declaring required dependencies until
        it is applied (see :meth:`register`)."""
        self.proposer: Proposer
        # Health, expiry and job sweeps commit through ``decide``: in PostgreSQL mode only the
        # decider's current term may write them (registry/pg_decider.py); elsewhere being the
        # leader (or the only node) is all there is to it.
        decide: Callable[[events.Event], Awaitable[Committed]]
        if postgres:
            from registry.pg_log import PgLog

            pg_log = PgLog(config, machine, self.liveness, self._die)
            self.proposer, decide = pg_log, pg_log.decide
        elif config.enable_leader_election:
            # The one place registry meets replication: its public entry point.
            from replication import open_cluster

            self.proposer = open_cluster(config, machine, self.liveness, self.metrics, self._die)
            decide = self.proposer.propose
        else:
            self.proposer = LocalLog(machine, config.instance_id)
            decide = self.proposer.propose
        self._decide = decide
        self.metrics.decider.set_function(lambda: int(self.proposer.leading()))
        self.monitor = HealthMonitor(
            self.view,
            self.liveness,
            self.decide,
            self.proposer.leading,
            config.health_check_interval,
            config.agent_timeout,
            config.retention,
        )
        self.leases = Leases(self.view)
        machine.listeners.append(self.leases.on_applied)
        machine.reset_listeners.append(self.leases.on_reset)
        self.job_sweeper = JobSweeper(
            self.view,
            self.leases,
            self.decide,
            self.proposer.leading,
            config.sweep_interval,
            config.job_stale_timeout,
            config.retention,
            config.job_retention,
        )
        self.projection: SqliteProjection | PgProjection | None = None
        if postgres:
            from registry.pg_projection import PgProjection

            self.projection = PgProjection(
                config, self.view, self.liveness, self.proposer.leading, self._die
            )
        elif config.sqlite_projection:
            self.projection = SqliteProjection(config.database_path, self.view)
        if self.projection is not None:
            machine.listeners.append(self.projection.on_applied)
            machine.reset_listeners.append(self.projection.on_reset)
        self.started_monotonic = time.monotonic()
        self._monitor_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    def _die(self, error: BaseException) -> None:
        """Stop serving: the replicated log holds something this node must not skip."""
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(error)

    async def propose(self, event: events.Event) -> Committed:
        """Commit ``event`` through this node's proposer, timing it for the metrics."""
        return await self._timed(self.proposer.propose, event)

    async def decide(self, event: events.Event) -> Committed:
        """Commit a decision of the health monitor or the job sweep (see ``__init__``)."""
        return await self._timed(self._decide, event)

    async def _timed(
        self, commit: Callable[[events.Event], Awaitable[Committed]], event: events.Event
    ) -> Committed:
        started = time.perf_counter()
        committed = await commit(event)
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        return committed

    @classmethod
    def open(cls, config: Config) -> Node:
        """Open the data directory and rebuild the view (raises CorruptRecord on damage).

        In PostgreSQL mode there is no data directory: the view starts empty and the proposer
        replays the database's log once it connects.
        """
        if config.database_type == "postgresql":
            view = View(history_limit=config.events_history)
            return cls(config, None, StateMachine(None, view, config.snapshot_every))
        store = Store(os.path.join(config.data_dir, "lmdb"), config.lmdb_map_size)
        started = time.monotonic()
        try:
            view = restore_view(store, config.events_history)
        except BaseException:
            store.close()
            raise
        log.info(
            "view restored",
            extra={
                "applied_index": view.applied_index,
                "agents": len(view.agents),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return cls(config, store, StateMachine(store, view, config.snapshot_every))

    async def start(self) -> None:
        if self.config.insecure_key:
            # Accepted so the guide's dev setup runs as written; said at every start (and by
            # mcp_registry_insecure_key, which the PrometheusRule alerts on) so it never ships.
            log.warning(
                "ENCRYPTION_KEY is the deployment guide's published example: anyone who reaches "
                "RAFT_PORT can join the cluster or inject entries; create a random key "
                "(k8s/README.md, Step 2)"
            )
        self.fatal = asyncio.get_running_loop().create_future()
        self.gc_pauses.install()
        await self.proposer.start()
        if self.projection is not None:
            await self.projection.start()
        self.liveness.watching_since = time.monotonic()
        self._monitor_task = asyncio.create_task(self.monitor.run(), name="health-monitor")
        self._sweep_task = asyncio.create_task(self.job_sweeper.run(), name="job-sweep")

    async def stop(self) -> None:
        for task in (self._monitor_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.proposer.stop()
        if self.projection is not None:
            await self.projection.stop()
        if self.store is not None:
            self.store.close()
        self.gc_pauses.remove()

    def _unchanged(self, agent: dict[str, Any]) -> bool:
        known = self.view.agents.get(agent["agent_id"])
        return (
            known is not None
            and known.registration == agent
            and known.status == HEALTHY
            and not self.view.needs_full_heartbeat(agent["agent_id"])
            and not self.view.audit_due(agent["agent_id"])
        )

    async def register(self, agent: dict[str, Any], client: str) -> bool:
        """Record a registration or full heartbeat from ``client`` (its address); True when
        the agent was new.

        Appends an event only when a replica must learn something: the registration changed,
        the agent was unhealthy, or its dependencies resolve differently from what it was last
        told. Otherwise the heartbeat only refreshes in-memory liveness. "Unchanged" is decided
        on a view brought up to date by a barrier first: a replica behind the leader (or cut off
        from it) must not acknowledge a write against state that is already gone. A write is
        admitted first (registry/limits.py: raises Refused) and refused if its required
        dependencies would close a loop (RequiredLoop); liveness learns the agent only once its
        registration is in, so refused or failed ones leave nothing behind.
        """
        self.admission.check_shape(agent)
        requires = any(
            spec.get("required") is True
            for tool in agent.get("tools") or ()
            for spec in tool.get("dependencies") or ()
        )
        if not requires:
            return await self._register(agent, client)
        # As the Go registry's lock: two halves of a loop sent to this node at once must not
        # both pass the check against a view that holds neither (across replicas they still
        # can; docs/protocol.md). The check reads a view brought up to date by a barrier: a
        # half acknowledged through another replica before this request came must count, as
        # one deleted there must no longer (this replica may not have applied either yet).
        await self.proposer.barrier()  # outside the lock: the view only moves forward
        async with self._requirements_checked:
            if (loop := self.view.required_loop(agent)) is not None:  # never could be available
                raise RequiredLoop(loop)
            return await self._register(agent, client, current=True)

    async def _register(self, agent: dict[str, Any], client: str, current: bool = False) -> bool:
        """``current``: the view was just brought up to date by a barrier (no second one)."""
        agent_id = agent["agent_id"]
        new = agent_id not in self.view.agents
        if self._unchanged(agent) and not current:
            await self.proposer.barrier()
        if not self._unchanged(agent):
            new = agent_id not in self.view.agents
            self.admission.check_write(client, new, len(self.view.agents))
            await self.propose(events.upsert(agent, now_ms()))
        self.liveness.seen(agent_id)
        return new

    async def unregister(self, agent_id: str) -> bool:
        """Remove an agent; False when it was not registered at the moment the removal took
        effect (decided by applying the removal's own log entry, never by a possibly stale
        local view nor by the bounded event history, which later entries may have overrun)."""
        if agent_id not in self.view.agents:
            await self.proposer.barrier()
            if agent_id not in self.view.agents:
                return False
        committed = await self.propose(events.remove(agent_id, now_ms()))
        self.liveness.forget(agent_id)
        return committed.took_effect
