"""registry/pg_log.py and registry/pg_decider.py in process, against a real PostgreSQL server
(tests/postgres.py): the term fence and the order of appends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from registry import events, pg_log
from registry.commit import StateMachine, Unavailable
from registry.config import Config, Database
from registry.events import CorruptRecord
from registry.health import Liveness
from registry.pg_log import PgLog
from registry.view import View
from tests.conftest import eventually, make_config
from tests.postgres import DATABASE, USER, Postgres

Start = Callable[..., Awaitable[PgLog]]


def new_log(
    root: Path,
    port: int,
    name: str,
    on_fatal: Callable[[BaseException], None] = lambda error: None,
    **overrides: Any,
) -> PgLog:
    """A PgLog (not started) named ``name`` on the server at ``port`` of 127.0.0.1."""
    config: Config = replace(
        make_config(root / name),
        database_type="postgresql",
        database=Database(host="127.0.0.1", port=port, name=DATABASE, user=USER),
        instance_id=name,
        write_timeout=3.0,
        **overrides,
    )
    machine = StateMachine(None, View(history_limit=100), config.snapshot_every)
    return PgLog(config, machine, Liveness(), on_fatal)


@pytest.fixture
async def start_log(tmp_path: Path, postgres: Postgres) -> AsyncIterator[Start]:
    started: list[PgLog] = []

    async def start(
        name: str,
        retry_period: float = 0.1,
        snapshot_every: int = 10000,
        on_fatal: Callable[[BaseException], None] = lambda error: None,
    ) -> PgLog:
        pg = new_log(
            tmp_path,
            postgres.port,
            name,
            on_fatal,
            retry_period=retry_period,
            snapshot_every=snapshot_every,
        )
        await pg.start()
        started.append(pg)
        await eventually(lambda: pg.ready()[0])
        return pg

    yield start
    for pg in reversed(started):
        await pg.stop()


def agent(agent_id: str) -> events.Event:
    return events.upsert({"agent_id": agent_id, "name": agent_id, "tools": []}, 1)


async def test_a_decider_that_lost_its_session_cannot_write_decisions(
    start_log: Start, postgres: Postgres
) -> None:
    # "a" checks its session only every minute: it will still believe it decides after its
    # session is gone, the case the term exists for.
    a = await start_log("a", retry_period=60.0)
    await eventually(a.leading)
    old_term = a.decider.term
    assert old_term is not None
    await a.decide(events.health("unhealthy", ["x"], 1))  # the current term is accepted
    b = await start_log("b")
    assert not b.leading()
    postgres.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
    )
    await eventually(b.leading)
    assert b.decider.term is not None and b.decider.term > old_term
    assert a.leading()  # not noticed yet
    head = postgres.psql("SELECT idx FROM mesh_registry_head")
    with pytest.raises(Unavailable, match="newer decider"):
        await a.decide(events.health("unhealthy", ["y"], 2))
    assert not a.leading()  # a refused decision ends its deciding at once
    assert postgres.psql("SELECT idx FROM mesh_registry_head") == head
    await b.decide(events.health("unhealthy", ["z"], 3))
    await a.propose(agent("still-writes"))  # ordinary writes carry no term
    await a.barrier()
    assert "still-writes" in a.machine.view.agents


async def test_concurrent_appends_from_two_replicas_apply_in_one_order_without_gaps(
    start_log: Start,
) -> None:
    a, b = await start_log("a"), await start_log("b")
    await asyncio.gather(
        *(pg.propose(agent(f"{name}-{i}")) for i in range(100) for pg, name in ((a, "a"), (b, "b")))
    )
    await a.barrier()
    await b.barrier()
    assert a.machine.view.applied_index == b.machine.view.applied_index == 200
    assert a.machine.view.digest() == b.machine.view.digest()


SLOW_COMMIT = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON mesh_registry_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


async def test_a_connection_lost_during_commit_is_an_unknown_outcome(
    start_log: Start, postgres: Postgres
) -> None:
    """The append is sent, then its backend dies before answering (a deferred trigger holds
    its implicit COMMIT open until it is terminated): the write must be neither success nor
    "not committed", which the client could not tell from the server."""
    pg = await start_log("a")
    postgres.psql(SLOW_COMMIT)
    write = asyncio.create_task(pg.propose(agent("in-doubt")))

    def committing() -> str:
        return postgres.psql(
            "SELECT pid FROM pg_stat_activity "
            "WHERE query LIKE '/* mesh-registry append */%' AND state = 'active'"
        )

    pid = await eventually(lambda: asyncio.to_thread(committing))
    postgres.psql(f"SELECT pg_terminate_backend({pid})")
    with pytest.raises(Unavailable, match=r"append not confirmed.*outcome unknown"):
        await write
    postgres.psql("DROP TRIGGER slow_commit ON mesh_registry_log")

    async def accepted() -> bool:
        """A client's retry: refused ("not committed") until the replica has reconnected."""
        try:
            await pg.propose(agent("after"))
        except Unavailable:
            return False
        return True

    await eventually(accepted)
    assert "in-doubt" not in pg.machine.view.agents  # terminated mid-COMMIT: rolled back


@pytest.fixture
def fatal() -> list[BaseException]:
    """What the log started by ``started_for_divergence`` stopped its node with."""
    return []


async def started_for_divergence(
    tmp_path: Path, postgres: Postgres, fatal: list[BaseException]
) -> PgLog:
    pg = new_log(tmp_path, postgres.port, "d", fatal.append)
    await pg.start()
    await eventually(lambda: pg.ready()[0])
    for i in range(5):
        await pg.propose(agent(f"kept-{i}"))
    return pg


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        # restored from an older backup, or failed over to a standby that lacked the last
        # commits: the log is shorter than what was applied
        (
            "DELETE FROM mesh_registry_log WHERE idx > 3; UPDATE mesh_registry_head SET idx = 3",
            "the database log ends at 3",
        ),
        # ... and written again since by others: as long as before, but another history
        (
            "UPDATE mesh_registry_log SET record = (SELECT record FROM mesh_registry_log "
            "WHERE idx = 1) WHERE idx = 5",
            "entry 5 is not the one applied",
        ),
        ("DELETE FROM mesh_registry_log WHERE idx = 5", "has no entry 5"),
    ],
)
async def test_a_database_log_that_went_back_stops_the_replica_naming_the_index(
    tmp_path: Path, postgres: Postgres, fatal: list[BaseException], damage: str, named: str
) -> None:
    """Review finding H1: a replica used to apply whatever the table held past its index, so a
    log that went back under it left its view on a history the others no longer had."""
    pg = await started_for_divergence(tmp_path, postgres, fatal)
    try:
        assert pg.machine.view.applied_index == 5
        postgres.psql(damage)
        with contextlib.suppress(Unavailable):
            await pg.barrier()
        await eventually(lambda: fatal)
        [error] = fatal
        assert isinstance(error, CorruptRecord) and error.index == 5, error
        assert named in str(error), error
        assert pg.machine.view.applied_index == 5  # nothing applied on top
        assert not pg.ready()[0]
    finally:
        await pg.stop()  # returns (review finding M1: it re-raised the reader's failure)


READER_PID = "SELECT pid FROM pg_stat_activity WHERE application_name = 'mesh-registry a reader'"


async def test_barriers_after_lost_reader_sessions_wait_for_one_round(
    start_log: Start, postgres: Postgres
) -> None:
    """Review finding: a round cut short by a lost connection was counted as started but
    never done, so after n lost sessions every barrier waited for n more rounds (and, with
    enough of them, ran past WRITE_TIMEOUT)."""
    pg = await start_log("a")
    for _ in range(4):
        backend = postgres.psql(READER_PID)
        postgres.psql(f"SELECT pg_terminate_backend({backend})")

        async def reconnected(old: str = backend) -> bool:
            now = await asyncio.to_thread(postgres.psql, READER_PID)
            return bool(now) and now != old and pg.ready()[0]

        await eventually(reconnected, timeout=10)
    await pg.barrier()
    # one round beyond those done: what a barrier now waits for, whatever was lost before
    assert pg._rounds_started - pg._rounds_done <= 1


async def test_appends_and_catch_up_pages_stay_within_their_byte_bounds(
    start_log: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records near the request body limit are appended a few per statement and read a few per
    page (MAX_BATCH_BYTES, PAGE_BYTES, here 20 KB), and a replica catching up over many such
    pages is caught up after one catch-up, not one page per polling round."""
    monkeypatch.setattr(pg_log, "MAX_BATCH_BYTES", 20_000)
    monkeypatch.setattr(pg_log, "PAGE_BYTES", 20_000)
    pages: list[int] = []
    fetch = asyncpg.Connection.fetch

    async def counted(conn: asyncpg.Connection, query: str, *args: object, **kw: object) -> Any:
        rows = await fetch(conn, query, *args, **kw)
        if query == pg_log.READ:
            pages.append(sum(len(row["record"] or b"") for row in rows))
        return rows

    monkeypatch.setattr(asyncpg.Connection, "fetch", counted)
    catch_ups: list[tuple[str, bool]] = []
    catch_up = PgLog._catch_up

    async def recorded(self: PgLog, conn: asyncpg.Connection) -> None:
        await catch_up(self, conn)
        catch_ups.append((self.config.instance_id, self._caught_up))

    monkeypatch.setattr(PgLog, "_catch_up", recorded)
    a = await start_log("a")
    batches: list[int] = []
    append = a._append

    async def spied(conn: asyncpg.Connection, batch: list[Any]) -> None:
        batches.append(sum(len(pending.record) for pending in batch))
        await append(conn, batch)

    monkeypatch.setattr(a, "_append", spied)
    big = [
        events.upsert({"agent_id": f"big-{i}", "name": "x" * 8000, "tools": []}, 1)
        for i in range(20)
    ]
    await asyncio.gather(*(a.propose(event) for event in big))
    assert len(batches) >= 8 and max(batches) <= 20_000 + 9000, batches
    pages.clear()
    b = await start_log("b")
    assert b.machine.view.applied_index == a.machine.view.applied_index
    assert set(b.machine.view.agents) == {f"big-{i}" for i in range(20)}
    assert len(pages) >= 8 and max(pages) < 20_000 + 2 * 9000, pages
    assert catch_ups[[name for name, _ in catch_ups].index("b")] == ("b", True)


async def test_a_snapshot_is_decoded_off_the_event_loop(
    start_log: Start, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica starting from the database's snapshot builds its view in a thread, so a large
    snapshot does not stop the loop serving; the view it installs is the decider's."""
    a = await start_log("a", snapshot_every=5)
    await eventually(a.leading)
    for i in range(12):
        await a.propose(agent(f"snap-{i}"))
    await eventually(lambda: postgres.psql("SELECT count(*) FROM mesh_registry_snapshot") != "0")
    built_in: list[threading.Thread] = []
    build = StateMachine.build

    def recorded(self: StateMachine, index: int, record: bytes) -> View:
        built_in.append(threading.current_thread())
        return build(self, index, record)

    monkeypatch.setattr(StateMachine, "build", recorded)
    b = await start_log("b")
    assert built_in and threading.main_thread() not in built_in
    assert b.machine.snapshot_index > 0
    assert set(b.machine.view.agents) == {f"snap-{i}" for i in range(12)}


class HeldCloseRelay:
    """A TCP relay to the server that forwards everything but holds back the server's close
    from the client for ``hold`` seconds: the window between a backend's last message and the
    client seeing its connection end, which is a loop iteration on a real network, made wide."""

    def __init__(self, target_port: int, hold: float) -> None:
        self.target_port = target_port
        self.hold = hold
        self.port = 0
        self.closes_held = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> HeldCloseRelay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._relays:
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._pump(client_r, client_w)
        except asyncio.CancelledError:
            client_w.close()

    async def _pump(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            with contextlib.suppress(OSError):
                while data := await client_r.read(65536):
                    server_w.write(data)
                    await server_w.drain()
            server_w.close()

        up = asyncio.create_task(upstream())
        with contextlib.suppress(OSError):
            while data := await server_r.read(65536):
                client_w.write(data)
                await client_w.drain()
        self.closes_held += 1
        await asyncio.sleep(self.hold)  # the fault itself: the close arrives late
        client_w.close()
        up.cancel()


async def test_a_fatal_error_sent_to_an_idle_writer_is_a_lost_connection_not_a_damaged_log(
    tmp_path: Path, postgres: Postgres, fatal: list[BaseException]
) -> None:
    """Found by the chaos harness (``--topology postgresql``, seed 18001, ``pg-kill``): a
    backend told to end (terminated, or another backend crashed) sends FATAL, then closes. Sent
    to the writer's idle connection, asyncpg takes the message for a protocol error and refuses
    the next query with InternalClientError ("another operation is in progress") until it sees
    the close; an append in between stopped the replica as if its log were damaged (its process
    exited). It is a lost connection: the append's outcome unknown, the session reconnected."""
    relay = await HeldCloseRelay(postgres.port, hold=2.0).start()
    pg = new_log(tmp_path, relay.port, "f", fatal.append)
    await pg.start()
    try:
        await eventually(lambda: pg.ready()[0])
        await pg.propose(agent("before"))
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'mesh-registry f writer'"
        )
        await eventually(lambda: relay.closes_held >= 1)
        outcomes: list[str] = []

        async def accepted() -> bool:
            """A client's retries, through the window and after it."""
            try:
                await pg.propose(agent(f"retry-{len(outcomes)}"))
            except Unavailable as exc:
                outcomes.append(str(exc))
                return False
            return True

        await eventually(accepted, timeout=15)
        assert fatal == []
        assert any("outcome unknown" in o for o in outcomes), outcomes
    finally:
        await pg.stop()
        await relay.stop()


async def test_a_record_larger_than_a_page_is_read_and_the_next_one_too(
    start_log: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record alone above PAGE_BYTES (the page starts at the entry already applied, whose
    bytes count): the next page still holds the entry after it, for the replica that wrote it
    and for one catching up; it used to come back empty and stop the node as a gap."""
    monkeypatch.setattr(pg_log, "PAGE_BYTES", 20_000)
    stops: list[BaseException] = []
    a = await start_log("a", on_fatal=stops.append)
    await a.propose(events.upsert({"agent_id": "huge", "name": "x" * 25_000, "tools": []}, 1))
    await a.propose(agent("after-huge"))
    await a.propose(agent("after-that"))
    b = await start_log("b")
    for log in (a, b):
        await eventually(lambda log=log: "after-that" in log.machine.view.agents)
    assert set(b.machine.view.agents) == {"huge", "after-huge", "after-that"}
    assert stops == []
