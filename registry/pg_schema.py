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
"""

DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
"""What a lost, refused or misconfigured database connection raises."""


async def connect(
    config: Config, timeout: float, server_settings: dict[str, str] | None = None
) -> asyncpg.Connection:
    """A connection to the configured database (raises one of DB_ERRORS)."""
    return await asyncpg.connect(
        **config.database.connect_args(), timeout=timeout, server_settings=server_settings
    )


async def ensure_schema(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(SCHEMA)
