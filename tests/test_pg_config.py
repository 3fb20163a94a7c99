"""DATABASE_TYPE=postgresql settings: the guide's parts, MCP Mesh's DATABASE_URL, which wins."""

from __future__ import annotations

import pytest

from registry import config

PARTS = {
    "DATABASE_HOST": "postgres",
    "DATABASE_PORT": "5433",
    "DATABASE_NAME": "registry",
    "DATABASE_USER": "mcpmesh",
    "DATABASE_PASSWORD": "changeme",
}


def test_the_guides_configmap_and_secret() -> None:
    loaded = config.load({"DATABASE_TYPE": "postgresql", **PARTS})
    assert loaded.database.connect_args() == {
        "host": "postgres",
        "port": 5433,
        "database": "registry",
        "user": "mcpmesh",
        "password": "changeme",
    }
    assert "changeme" not in repr(loaded)


def test_a_postgresql_url_alone_selects_the_mode_and_wins_over_the_parts() -> None:
    url = "postgresql://mesh@db.example:5432/mesh"
    loaded = config.load({"DATABASE_URL": url, **PARTS})
    assert loaded.database_type == "postgresql"
    # The URL carries no password: the Secret's fills it in; the other parts are ignored.
    assert loaded.database.connect_args() == {"dsn": url, "password": "changeme"}
    assert loaded.database.describe() == "db.example:5432/mesh"


def test_a_urls_own_password_is_kept() -> None:
    url = "postgres://mesh:own@db/mesh"
    loaded = config.load({"DATABASE_URL": url, "DATABASE_PASSWORD": "other"})
    assert loaded.database.connect_args() == {"dsn": url}


def test_lmdb_ignores_a_sqlite_database_url() -> None:
    """The Go registry's DATABASE_URL may be a SQLite file name: not ours to use."""
    assert config.load({"DATABASE_URL": "go-registry.db"}).database_type == "lmdb"


def test_postgresql_and_raft_exclude_each_other() -> None:
    env = {"DATABASE_TYPE": "postgresql", "ENABLE_LEADER_ELECTION": "true"}
    with pytest.raises(config.ConfigError, match="exclude each other"):
        config.load(env)
