"""The PostgreSQL tables of DATABASE_TYPE=postgresql, and how to reach them.

``registry/pg_log.py`` says what the tables hold and why appends are serialized by the head
row; ``registry/pg_decider.py`` what the term is. Both connect here, and both treat the same
exceptions as "the database is unreachable".
"""

from __future__ import annotations

import asyncpg

from registry.config import Config

SCHEMA_LOCK = 0x6D6573685F736368
"""``pg_advisory_xact_lock`` key held while creating the tables, so replicas starting together
do not race on ``CREATE TABLE IF NOT EXISTS`` (which is not safe against concurrent creators)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS mesh_registry_log (idx bigint PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE IF NOT EXISTS mesh_registry_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    idx bigint NOT NULL,
    term bigint NOT NULL,
    decider text NOT NULL
);
INSERT INTO mesh_registry_head VALUES (true, 0, 0, '') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS mesh_registry_snapshot (idx bigint PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    id text PRIMARY KEY,
    name text NOT NULL,
    capability text[] NOT NULL,
    status text NOT NULL,
    last_seen timestamptz NOT NULL,
    endpoint text NOT NULL,
    namespace text NOT NULL,
    registration jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS mesh_registry_projection (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    idx bigint NOT NULL
);
INSERT INTO mesh_registry_projection VALUES (true, 0) ON CONFLICT DO NOTHING;
"""
"""The log and its head (``registry/pg_log.py``), its snapshots (``registry/pg_snapshots.py``),
the ``agents`` projection and the log index it reflects (``registry/pg_projection.py``)."""

TABLES = (
    "mesh_registry_log",
    "mesh_registry_head",
    "mesh_registry_snapshot",
    "agents",
    "mesh_registry_projection",
)

DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What a lost, refused or misconfigured database connection raises. InternalClientError is
how asyncpg refuses a query on a connection whose protocol state it lost: a server that ends a
session (terminated, its postmaster gone, another backend crashed) sends FATAL and then
closes, and a FATAL arriving while the connection is idle leaves asyncpg consuming an error
until it sees the close; a query in between fails with "another operation is in progress".
The connection is gone, not the log damaged (the chaos harness's ``pg-kill`` found it
stopping replicas)."""

SESSION_SETTINGS = {
    # A vanished replica's idle session (its host gone, its network cut) is dropped by the
    # server within about 11 s, releasing whatever it held.
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    # A paused replica (SIGSTOP, a long GC, a frozen VM) answers keepalives from its kernel but
    # sends nothing: a transaction it left open is ended after 10 s, so no lock it took there
    # (the schema lock below) outlives it. Appends hold no transaction open across round trips.
    "idle_in_transaction_session_timeout": "10s",
    # Neither ends a session the server is blocked writing to (a paused listener whose socket
    # filled with notifications, a host gone with data unacknowledged: retransmissions would
    # take ~15 minutes); unacknowledged data for 10 s does.
    "tcp_user_timeout": "10000",
}
"""Set on every connection the registry opens."""

IDLE_SESSION_FLOOR = 10.0
"""Shortest ``idle_session_timeout`` set by :func:`drop_when_idle`, in seconds."""


def reason(exc: BaseException) -> str:
    """An exception as a readiness reason: never empty (``str(TimeoutError())`` is)."""
    return str(exc) or type(exc).__name__


async def connect(config: Config, timeout: float, role: str) -> asyncpg.Connection:
    """A connection to the configured database (raises one of DB_ERRORS), named in
    ``pg_stat_activity`` by the replica and its ``role`` (writer, reader, decider)."""
    settings = {
        **SESSION_SETTINGS,
        "application_name": f"mesh-registry {config.instance_id} {role}",
    }
    return await asyncpg.connect(
        **config.database.connect_args(), timeout=timeout, server_settings=settings
    )


async def drop_when_idle(conn: asyncpg.Connection, seconds: float, timeout: float) -> None:
    """Have the server end this session once it has sent nothing for ``seconds``.

    For the sessions that hold something while idle: the reader's LISTEN (a listener that
    never reads pins the server's notification queue, which fills and then fails every
    append) and the decider's advisory lock (a paused decider would keep it from the others
    for ever). Both send a query at least every few seconds while their process runs. The
    setting exists from PostgreSQL 14; older servers keep only the keepalives.
    """
    if conn.get_server_version() >= (14,):
        limit = max(IDLE_SESSION_FLOOR, seconds)
        await conn.execute(f"SET idle_session_timeout = '{int(limit * 1000)}ms'", timeout=timeout)


async def ensure_schema(conn: asyncpg.Connection, timeout: float) -> None:
    """Create the tables unless they exist: a role that may only read and write them (a
    managed database's application user, the tables made by its owner) needs no privilege on
    the schema itself."""
    exists = await conn.fetchval(
        "SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest($1::text[]) AS name",
        TABLES,
        timeout=timeout,
    )
    if exists:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK, timeout=timeout)
        await conn.execute(SCHEMA, timeout=timeout)
