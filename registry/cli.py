"""Command line: ``mcp-mesh-registry`` (and ``python -m registry``) serves a registry node.

Configuration comes from the environment (``--help`` lists every variable). Startup failures
an operator must act on are one line on stderr: a bad configuration value exits 2, a corrupt
log record exits 1 naming its index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from registry import __version__, backup, config, gc_pauses, logs, tls, trust
from registry.api.app import build_admin_app, build_app, build_metrics_app
from registry.events import CorruptRecord
from registry.node import Node
from registry.sqlite_projection import AGENT_COLUMNS, agent_rows
from registry.store import StorageFailure

log = logging.getLogger("registry")


def _environment_help() -> str:
    width = max(len(s.name) for s in config.SETTINGS)
    lines = ["environment variables (name, default, meaning):"]
    lines += [f"  {s.name:<{width}}  {s.default:<26}  {s.meaning}" for s in config.SETTINGS]
    lines.append("durations accept 500ms, 30s, 1m, 1h or plain seconds")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-mesh-registry",
        description="Highly available MCP Mesh registry (LMDB event log, agent protocol).",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run a registry node (the default)")
    cluster = commands.add_parser("cluster", help="cluster administration").add_subparsers(
        dest="action", required=True
    )
    remove = cluster.add_parser(
        "remove",
        help="remove a departed member (after scaling down), through a running node",
        description="Remove a departed member, e.g. after `kubectl scale --replicas=2`: "
        "mcp-mesh-registry cluster remove "
        "mcp-mesh-registry-2.mcp-mesh-registry-headless.mcp-mesh.svc.cluster.local:4321. "
        "Refused when the remaining reachable members would not be a majority.",
    )
    remove.add_argument("member", help="the member's Raft address (see GET /api/v1/cluster)")
    remove.add_argument("--url", help=_URL_HELP)
    backup = commands.add_parser(
        "backup",
        help="write a consistent backup of a running registry to a file",
        description="Ask a running node for a backup (after a barrier, so it holds every write "
        "acknowledged before it) and write it to FILE, plus FILE.sha256 for `sha256sum -c`.",
    )
    backup.add_argument("--out", required=True, type=Path, metavar="FILE")
    backup.add_argument("--url", help=_URL_HELP)
    restore = commands.add_parser(
        "restore",
        help="make an empty data directory start from a backup",
        description="Check FILE and write it into an empty data directory (DATA_DIR unless "
        "--data-dir is given); the node started on it serves the backup's agents. For a "
        "cluster, restore the same file into every member's empty data directory, then start "
        "them all (k8s/README.md, 'Backup and restore'). With DATABASE_TYPE=postgresql and no "
        "--data-dir: into the configured database, whose log must be empty.",
    )
    restore.add_argument("--from", dest="source", required=True, type=Path, metavar="FILE")
    restore.add_argument("--data-dir", type=Path, help="target directory (default: DATA_DIR)")
    inspect = commands.add_parser(
        "inspect",
        help="list the agents of a running node or of a backup file",
        description="One row per agent, the columns of the guide's "
        '`sqlite3 registry.db "SELECT * FROM agents;"` (the Go registry\'s agents table).',
    )
    inspect.add_argument("--from", dest="source", type=Path, metavar="FILE", help="a backup")
    inspect.add_argument("--url", help=_URL_HELP)
    inspect.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    return parser


_URL_HELP = "a running node's HTTP address (default: this node, 127.0.0.1:REGISTRY_PORT)"


def _admin_call(cfg: config.Config, method: str, url: str | None, path: str) -> tuple[int, bytes]:
    """One request to a running node with the AUTH_TOKEN; aiohttp.ClientError if unreachable
    (or its certificate cannot be verified)."""
    scheme = "https" if cfg.trust.tls else "http"
    base = (url or f"{scheme}://127.0.0.1:{cfg.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {cfg.auth_token}"} if cfg.auth_token else {}
    context = _client_tls(cfg.trust, own_node=url is None) if base.startswith("https:") else None

    async def call() -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.request(method, f"{base}{path}", ssl=context or True) as resp,
        ):
            return resp.status, await resp.read()

    return asyncio.run(call())


def _client_tls(settings: trust.TrustSettings, own_node: bool) -> ssl.SSLContext:
    """The CLI's HTTPS context, with the variables the SDK reads as a client: the server is
    verified against MCP_MESH_TLS_CA (else the system's CAs), MCP_MESH_TLS_CERT/_KEY are the
    client certificate (in the pod: the registry's own, which its Certificate issues for
    client auth too), needed in strict mode.

    Host names are not checked: the node is reached at 127.0.0.1 or a pod IP, which its
    certificate does not name; the CA is what vouches for it. Nothing is verified only for
    this pod's own node without a CA (no --url, no MCP_MESH_TLS_CA): it is the loopback."""
    context = ssl.create_default_context(cafile=settings.ca or None)
    context.check_hostname = False
    if own_node and not settings.ca:
        context.verify_mode = ssl.CERT_NONE
    if settings.cert and settings.key:
        context.load_cert_chain(settings.cert, settings.key)
    return context


def _fail(message: str) -> int:
    print(f"mcp-mesh-registry: {message}", file=sys.stderr)
    return 1


def cluster_remove(cfg: config.Config, member: str, url: str | None) -> int:
    """Ask a running node to remove ``member``; prints the node's answer."""
    try:
        status, body = _admin_call(cfg, "DELETE", url, f"/api/v1/cluster/members/{member}")
    except aiohttp.ClientError as exc:
        return _fail(f"cannot reach the registry: {exc}")
    print(body.decode())
    return 0 if status == 200 else 1


def _fetch_backup(cfg: config.Config, url: str | None) -> backup.Backup:
    try:
        status, body = _admin_call(cfg, "POST", url, "/api/v1/backup")
    except aiohttp.ClientError as exc:
        raise backup.BackupError(f"cannot reach the registry: {exc}") from None
    if status != 200:
        raise backup.BackupError(f"the registry refused the backup ({status}): {body.decode()}")
    return backup.decode(body)


def _read_backup(path: Path) -> backup.Backup:
    try:
        return backup.decode(path.read_bytes())
    except OSError as exc:
        raise backup.BackupError(f"cannot read {path}: {exc.strerror}") from None


def backup_command(cfg: config.Config, out: Path, url: str | None) -> int:
    made = _fetch_backup(cfg, url)
    data = backup.encode(
        made.applied_index,
        made.record,
        made.header["node"],
        made.header["agents"],
        made.header["created"],
    )
    digest = backup.write_file(out, data)
    print(
        f"backup of applied index {made.applied_index} ({made.header['agents']} agents, "
        f"from {made.header['node']}) written to {out}, sha256 {digest}"
    )
    return 0


def restore_command(cfg: config.Config, source: Path, data_dir: Path | None) -> int:
    made = _read_backup(source)
    if cfg.database_type == "postgresql" and data_dir is None:
        asyncio.run(_restore_into_database(cfg, made))
        print(
            f"restored applied index {made.applied_index} ({made.header['agents']} agents) "
            f"into {cfg.database.describe()}; start the registry replicas on it"
        )
        return 0
    target = data_dir or Path(cfg.data_dir)
    backup.restore(made, target)
    print(
        f"restored applied index {made.applied_index} ({made.header['agents']} agents) "
        f"into {target}; start the registry on it"
    )
    return 0


async def _restore_into_database(cfg: config.Config, made: backup.Backup) -> None:
    """``restore`` in PostgreSQL mode: into the configured database, whose log must be empty
    (as the data directory must be in the other modes)."""
    from registry import pg_schema, pg_snapshots

    timeout = cfg.write_timeout
    try:
        conn = await pg_schema.connect(cfg, timeout, "restore")
        try:
            await pg_schema.ensure_schema(conn, timeout)
            await pg_snapshots.restore(conn, made.applied_index, made.record, timeout)
        finally:
            conn.terminate()
    except pg_snapshots.NotEmpty as exc:
        raise backup.BackupError(
            f"{exc}: restore only into a database no registry has written to (a new database, "
            "or one whose mesh_registry_* tables were dropped)"
        ) from None
    except pg_schema.DB_ERRORS as exc:
        raise backup.BackupError(
            f"database {cfg.database.describe()} unreachable: {pg_schema.reason(exc)}"
        ) from None


def inspect_command(cfg: config.Config, source: Path | None, url: str | None, as_json: bool) -> int:
    made = _read_backup(source) if source is not None else _fetch_backup(cfg, url)
    view = made.view()
    rows = [
        found.agent for agent_id in sorted(view.agents) if (found := agent_rows(view, agent_id))
    ]
    if as_json:
        for row in rows:
            print(json.dumps(dict(zip(AGENT_COLUMNS, row, strict=True))))
        return 0
    shown = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(AGENT_COLUMNS)]
    for line in [AGENT_COLUMNS, *shown]:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    print(f"({len(rows)} agents at applied index {made.applied_index})", file=sys.stderr)
    return 0


def _mode(cfg: config.Config) -> str:
    if cfg.database_type == "postgresql":
        return "postgresql"
    return "raft" if cfg.enable_leader_election else "single-node"


async def serve(cfg: config.Config) -> None:
    """Run one node until SIGTERM or SIGINT, then stop cleanly."""
    gc_pauses.tune_collector()
    node = Node.open(cfg)
    runners: list[web.AppRunner] = []
    watcher: asyncio.Task[None] | None = None
    try:
        await node.start()
        server_tls, imports = _trust(cfg, node)
        context = server_tls.context if server_tls is not None else None
        runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(
            runner, cfg.host, cfg.port, reuse_address=True, ssl_context=context
        ).start()
        if cfg.trust.admin_port:
            admin_runner = web.AppRunner(build_admin_app(node), access_log=None)
            await admin_runner.setup()
            runners.append(admin_runner)
            await web.TCPSite(
                admin_runner, cfg.host, cfg.trust.admin_port, ssl_context=context
            ).start()
        if server_tls is not None:
            server_tls.servers = [r.server for r in runners if r.server is not None]
        if server_tls is not None or imports is not None:
            watcher = asyncio.create_task(tls.watch(server_tls, imports), name="trust-watch")
        # The metrics port stays plain HTTP in every TLS mode: Prometheus presents no client
        # certificate, and it serves nothing an agent could use.
        if cfg.metrics_port != cfg.port:
            metrics_runner = web.AppRunner(build_metrics_app(node), access_log=None)
            await metrics_runner.setup()
            runners.append(metrics_runner)
            await web.TCPSite(metrics_runner, cfg.host, cfg.metrics_port).start()
        log.info(
            "registry serving",
            extra={
                "host": cfg.host,
                "port": cfg.port,
                "metrics_port": cfg.metrics_port,
                "data_dir": cfg.data_dir,
                "applied_index": node.view.applied_index,
                "mode": _mode(cfg),
                "tls_mode": cfg.trust.mode,
                "admin_port": cfg.trust.admin_port,
            },
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert node.fatal is not None
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait()), node.fatal]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        stopped = waits[0]
        stopped.cancel()
        if node.fatal.done():
            raise node.fatal.result()
        log.info("shutting down")
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for runner in reversed(runners):
            await runner.cleanup()
        await node.stop()


def _trust(
    cfg: config.Config, node: Node
) -> tuple[tls.ServerTLS | None, tls.TrustDirImport | None]:
    """The server TLS context (None when MCP_MESH_TLS_MODE=off) and the trust directory import
    (None without MCP_MESH_TRUST_DIR); ConfigError if the TLS files cannot be used."""
    server_tls = tls.ServerTLS(cfg.trust, node.view) if cfg.trust.tls else None
    imports = None
    if cfg.trust.trust_dir:
        entities = Path(cfg.trust.trust_dir) / "entities"
        imports = tls.TrustDirImport(entities, node.view, node.propose)
    return server_tls, imports


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load()
        if args.command in (None, "serve"):
            tls.check_files(cfg.trust)
    except config.ConfigError as exc:
        print(f"mcp-mesh-registry: {exc}", file=sys.stderr)
        return 2
    if args.command == "cluster":
        return cluster_remove(cfg, args.member, args.url)
    try:
        if args.command == "backup":
            return backup_command(cfg, args.out, args.url)
        if args.command == "restore":
            return restore_command(cfg, args.source, args.data_dir)
        if args.command == "inspect":
            return inspect_command(cfg, args.source, args.url, args.json)
    except backup.BackupError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror}")
    logs.setup(cfg.log_level, cfg.instance_id)
    if args.command in (None, "serve"):
        try:
            asyncio.run(serve(cfg))
        except config.ConfigError as exc:
            print(f"mcp-mesh-registry: {exc}", file=sys.stderr)
            return 2
        except CorruptRecord as exc:
            print(f"mcp-mesh-registry: {exc}; refusing to start", file=sys.stderr)
            return 1
        except StorageFailure as exc:  # at startup or shutdown; while serving, raft halts
            print(f"mcp-mesh-registry: {exc}; stopping", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"mcp-mesh-registry: cannot serve: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
