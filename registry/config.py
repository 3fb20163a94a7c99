"""Configuration read once from the environment.

Names and defaults follow the deployment guide's ConfigMap (see CONTRACT.md), so the
guide's manifests work unchanged. Every value is parsed and checked up front: a bad value
raises :class:`ConfigError` naming the variable and the accepted form, which the CLI turns
into one line on stderr and exit status 2 instead of a traceback at first use.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from registry.limits import Limits
from registry.trust import DEFAULT_TRUST_DOMAIN, MODES, TrustSettings

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warn", "error")
DATABASE_TYPES = ("lmdb", "sqlite", "postgresql")

GUIDE_PLACEHOLDER_KEY = "dev-key-32-bytes-change-in-prod!"
"""The deployment guide's example ENCRYPTION_KEY (its Step 2). Everyone who read the guide knows
it, so it authenticates nobody: it is accepted only so the guide's dev setup runs as written,
and every start with it logs a warning and sets the ``mcp_registry_insecure_key`` metric."""
MIN_KEY_BYTES = 32
"""Shortest ENCRYPTION_KEY accepted in cluster mode (the guide's own example has 32 bytes)."""
KEY_HINT = "e.g. openssl rand -base64 32"

_SIZE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|Ti)?\s*$")
_UNIT_BYTES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, None: 1}
DEFAULT_MAP_SIZE = 8 << 30
"""Default LMDB_MAP_SIZE: an upper bound of the memory map (sparse: disk is used only as data
grows), per LMDB environment."""
MIN_MAP_SIZE = 64 << 10
"""Smallest LMDB_MAP_SIZE accepted: a few dozen pages, enough to open an environment."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is the one line shown."""


POSTGRES_SCHEMES = ("postgres", "postgresql")
"""URL schemes DATABASE_URL takes for PostgreSQL (libpq and MCP Mesh accept both)."""


@dataclass(frozen=True)
class Database:
    """Where the PostgreSQL event log lives (DATABASE_TYPE=postgresql).

    DATABASE_URL wins over the parts when both are given: it is the complete form MCP Mesh's
    own registry reads, and mixing a URL's host with a separate DATABASE_NAME would connect
    somewhere neither setting names. The one exception is the password: the guide keeps it in
    a Secret (DATABASE_PASSWORD) while the rest sits in a ConfigMap, so it fills in a URL that
    carries none. The password never appears in ``repr`` or in any message.
    """

    url: str = field(default="", repr=False)
    host: str = "localhost"
    port: int = 5432
    name: str = "registry"
    user: str = "mcpmesh"
    password: str = field(default="", repr=False)

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect``."""
        if self.url:
            args: dict[str, Any] = {"dsn": self.url}
            if self.password and urlsplit(self.url).password is None:
                args["password"] = self.password
            return args
        args = {"host": self.host, "port": self.port, "database": self.name, "user": self.user}
        if self.password:
            args["password"] = self.password
        return args

    def describe(self) -> str:
        """``host:port/name`` for logs and readiness reasons (never the password)."""
        if self.url:
            parts = urlsplit(self.url)
            return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        return f"{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Setting:
    """One documented environment variable (``--help`` and the manifest drift check use these)."""

    name: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("REGISTRY_HOST", "0.0.0.0", "bind address of the HTTP API"),
    Setting("REGISTRY_PORT", "8080", "HTTP API port"),
    Setting("METRICS_PORT", "9090", "Prometheus port (/metrics is also on REGISTRY_PORT)"),
    Setting("LOG_LEVEL", "info", "debug, info, warn or error"),
    Setting(
        "DATABASE_TYPE",
        "lmdb (postgresql if DATABASE_URL is a postgresql:// URL)",
        "lmdb, sqlite (also a SQLite agents projection) or postgresql (the log in PostgreSQL)",
    ),
    Setting(
        "DATABASE_URL",
        "(unset)",
        "postgresql://user:password@host:port/name; when set, DATABASE_HOST/PORT/NAME/USER are "
        "ignored (DATABASE_PASSWORD fills in a URL without a password)",
    ),
    Setting("DATABASE_HOST", "localhost", "PostgreSQL host (DATABASE_TYPE=postgresql)"),
    Setting("DATABASE_PORT", "5432", "PostgreSQL port"),
    Setting("DATABASE_NAME", "registry", "PostgreSQL database"),
    Setting("DATABASE_USER", "mcpmesh", "PostgreSQL user"),
    Setting("DATABASE_PASSWORD", "(unset)", "PostgreSQL password (from the postgres-secret)"),
    Setting("DATABASE_PATH", "/data/registry.db", "SQLite projection path"),
    Setting("DATA_DIR", "(dirname of DATABASE_PATH)", "LMDB event log and snapshots"),
    Setting("HEALTH_CHECK_INTERVAL", "30s", "how often agent liveness is evaluated"),
    Setting("AGENT_TIMEOUT", "60s", "no heartbeat for this long marks an agent unhealthy"),
    Setting("MCP_MESH_RETENTION", "1h", "unhealthy agents are removed after this long (0: never)"),
    Setting(
        "MCP_MESH_SWEEP_INTERVAL",
        "5m",
        "how often the leader sweeps jobs: orphaned owners, expired leases, deadlines, retention",
    ),
    Setting(
        "MCP_MESH_JOB_STALE_TIMEOUT", "0", "jobs without total_deadline fail after this (0: off)"
    ),
    Setting(
        "MCP_MESH_JOB_RETENTION",
        "24h",
        "terminal jobs are removed this long after they ended (0: never); their events go "
        "after MCP_MESH_RETENTION",
    ),
    Setting(
        "MCP_MESH_CANCEL_EVENT_GRACE_MS",
        "200",
        "milliseconds between a cancel's synthetic event and its forward to the owner (max 10000)",
    ),
    Setting("SNAPSHOT_EVERY", "10000", "write a view snapshot every this many log entries"),
    Setting("EVENTS_HISTORY", "1000", "registry events kept for GET /events"),
    Setting(
        "LMDB_MAP_SIZE",
        "8Gi",
        "size limit of each LMDB environment (log and snapshots, Raft journal); a cluster node "
        "whose journal write fails on it (or on a full disk) stops with exit 1",
    ),
    Setting("ENABLE_LEADER_ELECTION", "false", "true: replicated cluster mode (Raft)"),
    Setting("LEADER_ELECTION_LEASE_DURATION", "15s", "mapped onto Raft timing"),
    Setting("LEADER_ELECTION_RENEW_DEADLINE", "10s", "mapped onto Raft timing"),
    Setting("LEADER_ELECTION_RETRY_PERIOD", "2s", "mapped onto Raft timing"),
    Setting("REGISTRY_INSTANCE_ID", "(POD_NAME or hostname)", "this replica's id"),
    Setting("POD_NAME", "(unset)", "pod name from the Downward API"),
    Setting("POD_IP", "(unset)", "pod IP from the Downward API"),
    Setting("POD_NAMESPACE", "mcp-mesh", "namespace used to build peer DNS names"),
    Setting("CLUSTER_DOMAIN", "cluster.local", "cluster DNS domain"),
    Setting("HEADLESS_SERVICE", "mcp-mesh-registry-headless", "headless Service for peers"),
    Setting("RAFT_PORT", "4321", "Raft peer port"),
    Setting(
        "RAFT_FIRST_CONTACT_WAIT",
        "(from the Lease settings: 11.6s)",
        "how long a member with no cluster yet waits for every member before a first election "
        "without them (raise it where a member's process or DNS takes longer to appear)",
    ),
    Setting("REGISTRY_PEERS", "(unset)", "explicit host:port,... Raft peers, this node included"),
    Setting("REGISTRY_REPLICAS", "1", "StatefulSet replicas: peers are ordinals 0..N-1"),
    Setting("WRITE_TIMEOUT", "5s", "longest a write waits to commit before a 503"),
    Setting("AUTH_TOKEN", "(unset)", "Bearer token required for /api/v1 writes"),
    Setting(
        "ENCRYPTION_KEY",
        "(unset)",
        f"key (at least {MIN_KEY_BYTES} bytes, required in cluster mode) that authenticates "
        "and encrypts peer traffic",
    ),
    Setting("MAX_REQUEST_BYTES", "524288", "larger request bodies are refused (413)"),
    Setting("MAX_TOOLS_PER_AGENT", "500", "registrations with more tools are refused (400)"),
    Setting("MAX_AGENTS", "20000", "new agents beyond this many are refused (429)"),
    Setting("REGISTRATION_RATE", "100", "registration changes per second per client address"),
    Setting("REGISTRATION_BURST", "200", "burst allowed above REGISTRATION_RATE (429 beyond)"),
    Setting("MAX_JOBS", "100000", "new jobs beyond this many held are refused (429)"),
    Setting("MAX_JOB_EVENTS", "10000", "events posted to one job beyond this are refused (429)"),
    Setting(
        "MCP_MESH_PUBLIC_URL_PREFIX", "(unset)", "where external A2A clients reach agents' surfaces"
    ),
    Setting("MCP_MESH_PROXY_TIMEOUT", "60", "seconds a /proxy call may take (1-600)"),
    Setting(
        "MCP_MESH_PROPAGATE_HEADERS",
        "(unset)",
        "more request headers /proxy forwards: names, or prefixes ending in *",
    ),
    Setting("MCP_MESH_TLS_MODE", "off", "off (HTTP), auto (HTTPS, client cert optional), strict"),
    Setting("MCP_MESH_TLS_CERT", "(unset)", "server certificate PEM (reloaded when it changes)"),
    Setting("MCP_MESH_TLS_KEY", "(unset)", "server private key PEM (reloaded when it changes)"),
    Setting(
        "MCP_MESH_TLS_CA", "(unset)", "CA(s) trusted for client certificates, besides entities"
    ),
    Setting(
        "MCP_MESH_TRUST_DOMAIN", DEFAULT_TRUST_DOMAIN, "agent certs: CN agent.DOMAIN or SPIFFE"
    ),
    Setting("MCP_MESH_TRUST_DIR", "(unset)", "entities/*.pem here are trusted on every replica"),
    Setting(
        "MCP_MESH_TRUST_BACKEND", "(unset)", "only filestore (MCP_MESH_TRUST_DIR) is supported"
    ),
    Setting("MCP_MESH_ADMIN_PORT", "0", "serve /admin/* only on this port (0: on REGISTRY_PORT)"),
)


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``30s``, ``1m``, ``1h`` or plain seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_bool(text: str) -> bool:
    """The boolean spellings Kubernetes manifests use."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(text)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parse_size(text: str) -> int:
    """Bytes from ``65536``, ``512Mi``, ``8Gi`` (Kubernetes' binary suffixes); else ValueError."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(text)
    return int(match.group(1)) * _UNIT_BYTES[match.group(2)]


def _map_size(text: str) -> int:
    value = parse_size(text)
    if value < MIN_MAP_SIZE:
        raise ValueError(text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _grace_ms(text: str) -> float:
    """Seconds from MCP_MESH_CANCEL_EVENT_GRACE_MS (milliseconds, 0 to 10000 as in Go)."""
    value = int(text)
    if not 0 <= value <= 10_000:
        raise ValueError(text)
    return value / 1000


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered == "warning":
            lowered = "warn"
        if lowered not in choices:
            raise ValueError(text)
        return lowered

    return parse


@dataclass(frozen=True)
class Config:
    """Everything the registry reads from its environment, already validated."""

    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9090
    log_level: str = "info"
    database_type: str = "lmdb"
    database_path: str = "/data/registry.db"
    data_dir: str = "/data"
    health_check_interval: float = 30.0
    agent_timeout: float = 60.0
    retention: float = 3600.0
    sweep_interval: float = 300.0
    job_stale_timeout: float = 0.0
    job_retention: float = 86400.0
    cancel_grace: float = 0.2
    snapshot_every: int = 10000
    events_history: int = 1000
    lmdb_map_size: int = DEFAULT_MAP_SIZE
    enable_leader_election: bool = False
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    instance_id: str = ""
    pod_name: str = ""
    pod_ip: str = ""
    pod_namespace: str = "mcp-mesh"
    cluster_domain: str = "cluster.local"
    headless_service: str = "mcp-mesh-registry-headless"
    raft_port: int = 4321
    first_contact_wait: float | None = None
    peers: tuple[str, ...] = ()
    replicas: int = 1
    write_timeout: float = 5.0
    auth_token: str = ""
    encryption_key: str = ""
    limits: Limits = field(default_factory=Limits)
    public_url_prefix: str = ""
    """MCP_MESH_PUBLIC_URL_PREFIX: where external A2A clients reach surfaces (GET /a2a/agents)."""
    proxy_timeout: float = 60.0
    """MCP_MESH_PROXY_TIMEOUT: how long a /proxy call may take, unless its X-Mesh-Timeout says."""
    propagate_headers: tuple[str, ...] = ()
    """MCP_MESH_PROPAGATE_HEADERS: lowercased header names (``x-tenant-*``: a prefix) a /proxy
    call forwards besides its fixed list (registry/api/proxy.py)."""
    trust: TrustSettings = field(default_factory=TrustSettings)
    database: Database = field(default_factory=Database)
    """DATABASE_URL or DATABASE_HOST/PORT/NAME/USER/PASSWORD, used with DATABASE_TYPE=postgresql."""

    @property
    def sqlite_projection(self) -> bool:
        return self.database_type == "sqlite"

    @property
    def insecure_key(self) -> bool:
        """Cluster mode keyed with the guide's published placeholder (see GUIDE_PLACEHOLDER_KEY)."""
        return self.enable_leader_election and self.encryption_key == GUIDE_PLACEHOLDER_KEY


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from ``env`` (default: ``os.environ``); raises ConfigError."""
    env = os.environ if env is None else env

    def get(name: str, parse: Callable[[str], T], default: T, form: str) -> T:
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is invalid: expected {form}") from None

    duration_form = "a positive duration such as 500ms, 30s, 1m, 1h or plain seconds"
    database_path = env.get("DATABASE_PATH") or "/data/registry.db"
    pod_name = env.get("POD_NAME", "")
    config = Config(
        host=env.get("REGISTRY_HOST") or "0.0.0.0",
        port=get("REGISTRY_PORT", _port, 8080, "a port number 0-65535"),
        metrics_port=get("METRICS_PORT", _port, 9090, "a port number 0-65535"),
        log_level=get("LOG_LEVEL", _choice(LOG_LEVELS), "info", "one of debug, info, warn, error"),
        database_type=get(
            "DATABASE_TYPE",
            _choice(DATABASE_TYPES),
            "postgresql" if _postgres_url(env.get("DATABASE_URL", "")) else "lmdb",
            "one of lmdb, sqlite, postgresql",
        ),
        database_path=database_path,
        data_dir=env.get("DATA_DIR") or os.path.dirname(os.path.abspath(database_path)),
        health_check_interval=get("HEALTH_CHECK_INTERVAL", _positive_duration, 30.0, duration_form),
        agent_timeout=get("AGENT_TIMEOUT", _positive_duration, 60.0, duration_form),
        retention=get(
            "MCP_MESH_RETENTION", parse_duration, 3600.0, "a duration such as 30m or 1h (0: never)"
        ),
        sweep_interval=get("MCP_MESH_SWEEP_INTERVAL", _positive_duration, 300.0, duration_form),
        job_stale_timeout=get(
            "MCP_MESH_JOB_STALE_TIMEOUT", parse_duration, 0.0, "a duration such as 1h (0: off)"
        ),
        job_retention=get(
            "MCP_MESH_JOB_RETENTION", parse_duration, 86400.0, "a duration such as 24h (0: never)"
        ),
        cancel_grace=get(
            "MCP_MESH_CANCEL_EVENT_GRACE_MS",
            _grace_ms,
            0.2,
            "an integer number of milliseconds from 0 to 10000",
        ),
        snapshot_every=get("SNAPSHOT_EVERY", _positive_int, 10000, "a positive integer"),
        events_history=get("EVENTS_HISTORY", _positive_int, 1000, "a positive integer"),
        lmdb_map_size=get(
            "LMDB_MAP_SIZE", _map_size, DEFAULT_MAP_SIZE, "a size of at least 64Ki, e.g. 512Mi, 8Gi"
        ),
        enable_leader_election=get("ENABLE_LEADER_ELECTION", parse_bool, False, "true or false"),
        lease_duration=get(
            "LEADER_ELECTION_LEASE_DURATION", _positive_duration, 15.0, duration_form
        ),
        renew_deadline=get(
            "LEADER_ELECTION_RENEW_DEADLINE", _positive_duration, 10.0, duration_form
        ),
        retry_period=get("LEADER_ELECTION_RETRY_PERIOD", _positive_duration, 2.0, duration_form),
        instance_id=env.get("REGISTRY_INSTANCE_ID") or pod_name or socket.gethostname(),
        pod_name=pod_name,
        pod_ip=env.get("POD_IP", ""),
        pod_namespace=env.get("POD_NAMESPACE") or "mcp-mesh",
        cluster_domain=env.get("CLUSTER_DOMAIN") or "cluster.local",
        headless_service=env.get("HEADLESS_SERVICE") or "mcp-mesh-registry-headless",
        raft_port=get("RAFT_PORT", _port, 4321, "a port number 0-65535"),
        first_contact_wait=get("RAFT_FIRST_CONTACT_WAIT", _positive_duration, None, duration_form),
        peers=get("REGISTRY_PEERS", _peer_list, (), "a comma-separated list of host:port"),
        replicas=get("REGISTRY_REPLICAS", _positive_int, 1, "a positive integer"),
        write_timeout=get("WRITE_TIMEOUT", _positive_duration, 5.0, duration_form),
        auth_token=env.get("AUTH_TOKEN", ""),
        encryption_key=env.get("ENCRYPTION_KEY", ""),
        public_url_prefix=env.get("MCP_MESH_PUBLIC_URL_PREFIX", "").rstrip("/"),
        proxy_timeout=get(
            "MCP_MESH_PROXY_TIMEOUT", _proxy_seconds, 60.0, "whole seconds from 1 to 600"
        ),
        propagate_headers=get(
            "MCP_MESH_PROPAGATE_HEADERS",
            _header_patterns,
            (),
            "comma-separated header names, each maybe ending in * after a non-empty prefix",
        ),
        limits=Limits(
            request_bytes=get("MAX_REQUEST_BYTES", _positive_int, 512 << 10, "a positive integer"),
            tools_per_agent=get("MAX_TOOLS_PER_AGENT", _positive_int, 500, "a positive integer"),
            agents=get("MAX_AGENTS", _positive_int, 20_000, "a positive integer"),
            registration_rate=get(
                "REGISTRATION_RATE", _positive_float, 100.0, "a positive number per second"
            ),
            registration_burst=get("REGISTRATION_BURST", _positive_int, 200, "a positive integer"),
            jobs=get("MAX_JOBS", _positive_int, 100_000, "a positive integer"),
            job_events=get("MAX_JOB_EVENTS", _positive_int, 10_000, "a positive integer"),
        ),
    )
    config = replace(config, trust=_trust(env, get))
    if config.database_type == "postgresql":
        if config.enable_leader_election:
            raise ConfigError(
                "ENABLE_LEADER_ELECTION=true and DATABASE_TYPE=postgresql exclude each other: "
                "with PostgreSQL the replicas share its log and need no Raft (set it to false)"
            )
        config = replace(config, database=_database(env, get))
    if config.enable_leader_election:
        check_key(config.encryption_key)
    return config


def _postgres_url(url: str) -> bool:
    return url.partition("://")[0].lower() in POSTGRES_SCHEMES


def _database(env: Mapping[str, str], get: Callable[..., Any]) -> Database:
    """The PostgreSQL settings. A bad DATABASE_URL is named without echoing it: it may hold
    the password."""
    url = env.get("DATABASE_URL", "")
    if url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if parts is None or not _postgres_url(url):
            raise ConfigError(
                "DATABASE_URL is invalid (value not shown: it may hold a password): expected "
                "postgresql://user:password@host:port/name"
            )
    return Database(
        url=url,
        host=env.get("DATABASE_HOST") or "localhost",
        port=get("DATABASE_PORT", _port, 5432, "a port number 0-65535"),
        name=env.get("DATABASE_NAME") or "registry",
        user=env.get("DATABASE_USER") or "mcpmesh",
        password=env.get("DATABASE_PASSWORD", ""),
    )


def _proxy_seconds(raw: str) -> float:
    """Whole seconds 1-600, as the Go registry reads MCP_MESH_PROXY_TIMEOUT (it caps above 600
    and ignores anything else; a bad value here stops startup instead)."""
    seconds = int(raw)
    if not 1 <= seconds <= 600:
        raise ValueError(raw)
    return float(seconds)


def _header_patterns(raw: str) -> tuple[str, ...]:
    """MCP_MESH_PROPAGATE_HEADERS as the Go registry reads it: comma-separated, trimmed,
    lowercased, empty entries skipped, a trailing ``*`` making a prefix. An entry with an empty
    prefix (``*``) would forward every header (credentials and cookies too): the Go registry
    logs and skips it, here it stops startup, so that nobody believes it in force."""
    entries = [entry.strip().lower() for entry in raw.split(",")]
    if any(entry and not entry.removesuffix("*") for entry in entries):
        raise ValueError(raw)
    return tuple(entry for entry in entries if entry)


def check_key(key: str) -> None:
    """Refuse cluster mode without a key strong enough to keep strangers off RAFT_PORT.

    Peers authenticate each other with the key before any frame is parsed; without one, anyone
    who reaches the port can join the cluster or inject entries. The value is never echoed.
    """
    if not key:
        raise ConfigError(
            "ENCRYPTION_KEY is not set: ENABLE_LEADER_ELECTION=true needs a random key of at "
            f"least {MIN_KEY_BYTES} bytes shared by every replica ({KEY_HINT})"
        )
    size = len(key.encode())
    if size < MIN_KEY_BYTES:
        raise ConfigError(
            f"ENCRYPTION_KEY is too short ({size} bytes): ENABLE_LEADER_ELECTION=true needs a "
            f"random key of at least {MIN_KEY_BYTES} bytes ({KEY_HINT})"
        )


_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _trust_domain(text: str) -> str:
    if not _DOMAIN.match(text):
        raise ValueError(text)
    return text


def _trust_backend(text: str) -> str:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names != ["filestore"]:
        raise ValueError(text)
    return text


def _trust(env: Mapping[str, str], get: Callable[..., Any]) -> TrustSettings:
    """MCP Mesh's TLS and trust variables; cert and key are required unless the mode is off."""
    settings = TrustSettings(
        mode=get("MCP_MESH_TLS_MODE", _choice(MODES), "off", "one of off, auto, strict"),
        cert=env.get("MCP_MESH_TLS_CERT", ""),
        key=env.get("MCP_MESH_TLS_KEY", ""),
        ca=env.get("MCP_MESH_TLS_CA", ""),
        trust_domain=get(
            "MCP_MESH_TRUST_DOMAIN",
            _trust_domain,
            DEFAULT_TRUST_DOMAIN,
            "a DNS-style domain such as mcp-mesh.local",
        ),
        trust_dir=env.get("MCP_MESH_TRUST_DIR", ""),
        admin_port=get("MCP_MESH_ADMIN_PORT", _port, 0, "a port number 0-65535 (0: disabled)"),
    )
    get(
        "MCP_MESH_TRUST_BACKEND",
        _trust_backend,
        "",
        "filestore (entity CAs from MCP_MESH_TRUST_DIR; k8s-secrets, spire and localca are "
        "not supported: register entities with meshctl or POST /admin/entities)",
    )
    if settings.tls and not (settings.cert and settings.key):
        raise ConfigError(
            f"MCP_MESH_TLS_MODE={settings.mode} needs MCP_MESH_TLS_CERT and MCP_MESH_TLS_KEY "
            "(the registry's certificate and key files); use MCP_MESH_TLS_MODE=off for HTTP"
        )
    return settings


def _peer_list(text: str) -> tuple[str, ...]:
    peers = tuple(part.strip() for part in text.split(",") if part.strip())
    for peer in peers:
        host, sep, port = peer.rpartition(":")
        if not sep or not host:
            raise ValueError(text)
        _port(port)
    return peers
