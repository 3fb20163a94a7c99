"""The Go registry's SQLite schema (its Ent tables, as ``mcp-mesh-registry`` 3.7.1 creates them).

Our SQLite projection (``registry.sqlite_projection``) writes the view into these tables so that
what reads the Go registry's database reads ours the same way: the guide's ``sqlite3
/data/registry.db "SELECT * FROM agents;"``, and ``meshui``, which takes its event history and
its live agent diff straight from the database at ``DATABASE_URL`` rather than over HTTP.

The statements are the ones Ent's migration leaves in ``sqlite_master``, byte for byte
(tests/compat/test_meshui.py compares them with a database the Go registry made). That matters
because meshui runs Ent's migration on the file it opens, with column and index dropping
enabled: any column or index of ours that Ent does not know would be dropped, and any
difference in a table's shape altered, under our writer. With the same schema, the same
``ent_types`` rows and the same id ranges, the migration finds nothing to do.

Ent's global unique ids give each table its own range of 2**32 ids, in ``ent_types`` order;
the ranges are started the way Ent does, through ``sqlite_sequence``.
"""

from __future__ import annotations

import sqlite3

TABLES = (
    "agents",
    "capabilities",
    "dependency_resolutions",
    "jobs",
    "job_events",
    "llm_provider_resolutions",
    "llm_tool_resolutions",
    "registry_events",
    "schema_entries",
)
"""Ent's types in ``ent_types`` order (the n-th table's ids start at ``n << 32``)."""

_RESOLUTION_KEYS = (
    "CONSTRAINT `{table}_agents_{table}` FOREIGN KEY (`consumer_agent_id`) REFERENCES `agents` "
    "(`agent_id`) ON DELETE CASCADE, CONSTRAINT `{table}_agents_provider_agent` FOREIGN KEY "
    "(`provider_agent_id`) REFERENCES `agents` (`agent_id`) ON DELETE SET NULL"
)


def _resolution_keys(table: str) -> str:
    """The two foreign keys every resolution table has (its consumer and its provider)."""
    return _RESOLUTION_KEYS.format(table=table)


STATEMENTS = (
    "CREATE TABLE `agents` (`agent_id` text NOT NULL, `agent_type` text NOT NULL DEFAULT "
    "('mcp_agent'), `runtime` text NULL DEFAULT ('python'), `name` text NOT NULL, `version` "
    "text NULL, `description` text NULL DEFAULT (''), `a2a_producer` bool NULL DEFAULT (false), "
    "`a2a_consumer` bool NULL DEFAULT (false), `http_host` text NULL, `http_port` integer NULL, "
    "`namespace` text NOT NULL DEFAULT ('default'), `status` text NOT NULL DEFAULT ('healthy'), "
    "`total_dependencies` integer NOT NULL DEFAULT (0), `dependencies_resolved` integer NOT "
    "NULL DEFAULT (0), `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, "
    "`last_full_refresh` datetime NOT NULL, `entity_id` text NULL, `a2a_surfaces` json NULL, "
    "PRIMARY KEY (`agent_id`))",
    "CREATE INDEX `agent_namespace` ON `agents` (`namespace`)",
    "CREATE INDEX `agent_agent_type` ON `agents` (`agent_type`)",
    "CREATE INDEX `agent_updated_at` ON `agents` (`updated_at`)",
    "CREATE INDEX `agent_status` ON `agents` (`status`)",
    "CREATE INDEX `agent_status_updated_at` ON `agents` (`status`, `updated_at`)",
    "CREATE TABLE `capabilities` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "`function_name` text NOT NULL, `capability` text NOT NULL, `version` text NOT NULL DEFAULT "
    "('1.0.0'), `description` text NULL, `input_schema` json NULL, `input_schema_hash` text "
    "NULL, `output_schema_hash` text NULL, `schema_warnings` json NULL, `llm_filter` json NULL, "
    "`llm_provider` json NULL, `tags` json NOT NULL, `kwargs` json NULL, `dependencies` json "
    "NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, "
    "`agent_capabilities` text NOT NULL, CONSTRAINT `capabilities_agents_capabilities` FOREIGN "
    "KEY (`agent_capabilities`) REFERENCES `agents` (`agent_id`) ON DELETE CASCADE)",
    "CREATE INDEX `capability_capability` ON `capabilities` (`capability`)",
    "CREATE INDEX `capability_function_name` ON `capabilities` (`function_name`)",
    "CREATE TABLE `dependency_resolutions` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "`consumer_function_name` text NOT NULL, `dep_index` integer NOT NULL DEFAULT (0), "
    "`capability_required` text NOT NULL, `tags_required` json NULL, `version_required` text "
    "NULL, `namespace_required` text NOT NULL DEFAULT ('default'), `provider_function_name` "
    "text NULL, `endpoint` text NULL, `status` text NOT NULL DEFAULT ('unresolved'), "
    "`resolved_at` datetime NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT "
    "NULL, `consumer_agent_id` text NOT NULL, `provider_agent_id` text NULL, "
    + _resolution_keys("dependency_resolutions")
    + ")",
    "CREATE INDEX `dependencyresolution_consumer_agent_id_consumer_function_name` ON "
    "`dependency_resolutions` (`consumer_agent_id`, `consumer_function_name`)",
    "CREATE INDEX `dependencyresolution_consumer_a_0dd5ca4bd6fdac9aea9511cf3dbcb681` ON "
    "`dependency_resolutions` (`consumer_agent_id`, `consumer_function_name`, `dep_index`)",
    "CREATE INDEX `dependencyresolution_provider_agent_id` ON `dependency_resolutions` "
    "(`provider_agent_id`)",
    "CREATE INDEX `dependencyresolution_capability_required` ON `dependency_resolutions` "
    "(`capability_required`)",
    "CREATE INDEX `dependencyresolution_status` ON `dependency_resolutions` (`status`)",
    "CREATE INDEX `dependencyresolution_consumer_agent_id_status` ON `dependency_resolutions` "
    "(`consumer_agent_id`, `status`)",
    "CREATE TABLE `jobs` (`job_id` text NOT NULL, `capability` text NOT NULL, "
    "`owner_instance_id` text NULL, `claim_epoch` integer NOT NULL DEFAULT (0), `status` text "
    "NOT NULL DEFAULT ('working'), `progress` real NULL, `progress_message` text NULL, `result` "
    "json NULL, `error` text NULL, `submitted_payload` json NULL, `recv_cursor` json NULL, "
    "`attempt_count` integer NOT NULL DEFAULT (0), `max_retries` integer NOT NULL DEFAULT (1), "
    "`max_duration` integer NULL, `total_deadline` datetime NULL, `lease_expires_at` datetime "
    "NULL, `last_heartbeat_at` datetime NULL, `submitted_at` datetime NOT NULL, `submitted_by` "
    "text NULL, PRIMARY KEY (`job_id`))",
    "CREATE INDEX `job_capability_status` ON `jobs` (`capability`, `status`)",
    "CREATE INDEX `job_lease_expires_at` ON `jobs` (`lease_expires_at`)",
    "CREATE INDEX `job_owner_instance_id` ON `jobs` (`owner_instance_id`)",
    "CREATE INDEX `job_status` ON `jobs` (`status`)",
    "CREATE INDEX `job_submitted_at_job_id` ON `jobs` (`submitted_at`, `job_id`)",
    "CREATE TABLE `job_events` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `seq` integer "
    "NOT NULL, `job_id` text NOT NULL, `type` text NOT NULL, `payload` json NULL, "
    "`trace_context` json NULL, `posted_by` text NULL, `created_at` datetime NOT NULL)",
    "CREATE UNIQUE INDEX `jobevent_job_id_seq` ON `job_events` (`job_id`, `seq`)",
    "CREATE INDEX `jobevent_job_id_created_at` ON `job_events` (`job_id`, `created_at`)",
    "CREATE TABLE `llm_provider_resolutions` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "`consumer_function_name` text NOT NULL, `required_capability` text NOT NULL, "
    "`required_tags` json NULL, `required_version` text NULL, `required_namespace` text NOT "
    "NULL DEFAULT ('default'), `provider_function_name` text NULL, `endpoint` text NULL, "
    "`status` text NOT NULL DEFAULT ('unresolved'), `resolved_at` datetime NULL, `created_at` "
    "datetime NOT NULL, `updated_at` datetime NOT NULL, `consumer_agent_id` text NOT NULL, "
    "`provider_agent_id` text NULL, " + _resolution_keys("llm_provider_resolutions") + ")",
    "CREATE INDEX `llmproviderresolution_consumer_agent_id_consumer_function_name` ON "
    "`llm_provider_resolutions` (`consumer_agent_id`, `consumer_function_name`)",
    "CREATE INDEX `llmproviderresolution_provider_agent_id` ON `llm_provider_resolutions` "
    "(`provider_agent_id`)",
    "CREATE INDEX `llmproviderresolution_required_capability` ON `llm_provider_resolutions` "
    "(`required_capability`)",
    "CREATE INDEX `llmproviderresolution_status` ON `llm_provider_resolutions` (`status`)",
    "CREATE INDEX `llmproviderresolution_consumer_agent_id_status` ON "
    "`llm_provider_resolutions` (`consumer_agent_id`, `status`)",
    "CREATE TABLE `llm_tool_resolutions` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "`consumer_function_name` text NOT NULL, `filter_capability` text NULL, `filter_tags` json "
    "NULL, `filter_mode` text NOT NULL DEFAULT ('all'), `provider_function_name` text NULL, "
    "`provider_capability` text NULL, `endpoint` text NULL, `status` text NOT NULL DEFAULT "
    "('unresolved'), `resolved_at` datetime NULL, `created_at` datetime NOT NULL, `updated_at` "
    "datetime NOT NULL, `consumer_agent_id` text NOT NULL, `provider_agent_id` text NULL, "
    + _resolution_keys("llm_tool_resolutions")
    + ")",
    "CREATE INDEX `llmtoolresolution_consumer_agent_id_consumer_function_name` ON "
    "`llm_tool_resolutions` (`consumer_agent_id`, `consumer_function_name`)",
    "CREATE INDEX `llmtoolresolution_provider_agent_id` ON `llm_tool_resolutions` "
    "(`provider_agent_id`)",
    "CREATE INDEX `llmtoolresolution_filter_capability` ON `llm_tool_resolutions` "
    "(`filter_capability`)",
    "CREATE INDEX `llmtoolresolution_status` ON `llm_tool_resolutions` (`status`)",
    "CREATE INDEX `llmtoolresolution_consumer_agent_id_status` ON `llm_tool_resolutions` "
    "(`consumer_agent_id`, `status`)",
    "CREATE TABLE `registry_events` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, "
    "`event_type` text NOT NULL, `function_name` text NULL, `timestamp` datetime NOT NULL, "
    "`data` json NOT NULL, `agent_events` text NOT NULL, CONSTRAINT "
    "`registry_events_agents_events` FOREIGN KEY (`agent_events`) REFERENCES `agents` "
    "(`agent_id`) ON DELETE CASCADE)",
    "CREATE INDEX `registryevent_timestamp` ON `registry_events` (`timestamp`)",
    "CREATE INDEX `registryevent_event_type` ON `registry_events` (`event_type`)",
    "CREATE TABLE `schema_entries` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `hash` "
    "text NOT NULL, `canonical` json NOT NULL, `runtime_origin` text NOT NULL DEFAULT "
    "('unknown'), `created_at` datetime NOT NULL)",
    "CREATE UNIQUE INDEX `schema_entries_hash_key` ON `schema_entries` (`hash`)",
    "CREATE UNIQUE INDEX `schemaentry_hash` ON `schema_entries` (`hash`)",
    "CREATE TABLE `ent_types` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `type` text "
    "NOT NULL)",
    "CREATE UNIQUE INDEX `ent_types_type_key` ON `ent_types` (`type`)",
)


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the file already holds exactly this schema (so it is kept, not rebuilt)."""
    found = {
        sql
        for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'"
        )
    }
    return found == set(STATEMENTS)


def create(conn: sqlite3.Connection) -> None:
    """Replace whatever the file holds with this schema, empty, in one transaction.

    Whatever was there is a projection too (of an older version of ours, or of a meshui that
    got to an empty file first), so nothing is lost: the caller writes the view again.
    """
    # Python's sqlite3 opens a transaction only before DML: DROP and CREATE would each commit
    # on their own, and a reader (meshui) could find the file half replaced.
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        ]
        for name in tables:
            conn.execute(f'DROP TABLE "{name}"')
        for statement in STATEMENTS:
            conn.execute(statement)
        conn.execute("DELETE FROM sqlite_sequence")
        for n, table in enumerate(TABLES):
            conn.execute("INSERT INTO ent_types (id, type) VALUES (?, ?)", (n + 1, table))
            if n:
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, n << 32)
                )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
