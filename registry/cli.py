"""Command line: ``mcp-mesh-registry`` (and ``python -m registry``) serves a registry node.

Configuration comes from the environment (``--help`` lists every variable). Startup failures
an operator must act on are one line on stderr: a bad configuration value exits 2, a corrupt
log record exits 1 naming its index.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from registry import __version__, config, logs
from registry.api.app import build_app, build_metrics_app
from registry.events import CorruptRecord
from registry.node import Node

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
    remove.add_argument(
        "--url", help="a running node's HTTP address (default: this node, 127.0.0.1:REGISTRY_PORT)"
    )
    return parser


def cluster_remove(cfg: config.Config, member: str, url: str | None) -> int:
    """Ask a running node to remove ``member``; prints the node's answer."""
    base = url or f"http://127.0.0.1:{cfg.port}"
    headers = {"Authorization": f"Bearer {cfg.auth_token}"} if cfg.auth_token else {}

    async def call() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.delete(f"{base}/api/v1/cluster/members/{member}") as resp,
        ):
            return resp.status, await resp.text()

    try:
        status, body = asyncio.run(call())
    except aiohttp.ClientError as exc:
        print(f"mcp-mesh-registry: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(body)
    return 0 if status == 200 else 1


async def serve(cfg: config.Config) -> None:
    """Run one node until SIGTERM or SIGINT, then stop cleanly."""
    node = Node.open(cfg)
    runners: list[web.AppRunner] = []
    try:
        await node.start()
        runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True).start()
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
                "mode": "raft" if cfg.enable_leader_election else "single-node",
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
        for runner in reversed(runners):
            await runner.cleanup()
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        print(f"mcp-mesh-registry: {exc}", file=sys.stderr)
        return 2
    if args.command == "cluster":
        return cluster_remove(cfg, args.member, args.url)
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
        except OSError as exc:
            print(f"mcp-mesh-registry: cannot serve: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
