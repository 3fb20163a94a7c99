"""One chaos run: hosts up, replicas started, clients and nemesis running, heal, check.

The run directory gets: ``history.jsonl`` (every operation), ``faults.json`` (the schedule
and the faults carried out), ``final.json`` (what every replica holds after healing), the
replicas' logs, ``results.json`` and ``report.html``. Everything the run created on the
machine is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jepsen_like.check import check_run
from jepsen_like.client import NEMESIS_DONE
from jepsen_like.db import HTTP_PORT, PgReplica, Replica, wait_ready
from jepsen_like.hosts import DATABASE_SERVICE, Network, dns_name
from jepsen_like.nemesis import Nemesis, plan
from jepsen_like.pg_nemesis import PgNemesis, pg_compatible
from jepsen_like.pg_server import PgServer

TOPOLOGIES = ("raft", "postgresql")
"""``raft``: a StatefulSet of Raft members, each with its PVC. ``postgresql``: a Deployment of
stateless replicas sharing one PostgreSQL server on a host of its own (DATABASE_TYPE=postgresql,
jepsen_like/pg_server.py and pg_nemesis.py)."""

REGISTRY_ENV = {
    "AGENT_TIMEOUT": "10s",
    "HEALTH_CHECK_INTERVAL": "1s",
    "SNAPSHOT_EVERY": "200",
    "LOG_LEVEL": "info",
    # The job workload's leases are 2 s (jepsen_like/jobs.py): a sweep every second makes them
    # expire, and jobs be reclaimed, many times in a run. Terminal jobs are kept a day (the
    # default, pinned): no run is that long, so every acknowledged job is owed to the end.
    "MCP_MESH_SWEEP_INTERVAL": "1s",
    "MCP_MESH_JOB_RETENTION": "24h",
}


def run(
    run_dir: Path,
    time_limit: float,
    kinds: list[str],
    seed: int,
    workers: int = 6,
    replicas: int = 3,
    overlaps: int = 1,
    topology: str = "raft",
) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    postgres = topology == "postgresql"
    # ``membership`` scales the StatefulSet to replicas + 2 and back: two more hosts for it.
    spare_count = 2 if "membership" in kinds else 0
    network = Network(secrets.token_hex(2), replicas + spare_count, database=postgres)
    server = PgServer(network.database, run_dir) if network.database is not None else None
    nodes: list[Replica]
    spares: list[Replica]
    if postgres:
        nodes = [
            PgReplica(network, i, run_dir, REGISTRY_ENV, DATABASE_SERVICE) for i in range(replicas)
        ]
        spares = []
    else:
        nodes, spares = (
            [Replica(network, i, run_dir, REGISTRY_ENV, replicas) for i in range(first, last)]
            for first, last in ((0, replicas), (replicas, replicas + spare_count))
        )
    progress = _Progress(run_dir)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        network.up()
        if server is not None:
            server.init()
            progress(f"postgresql up on {server.host.ip}, data in {server.data}")
        for node in [*nodes, *spares]:
            if "power" in kinds or "membership" in kinds:  # both cut power (nemesis.py)
                node.mount_disk()
        for node in nodes:
            node.start()
        if not wait_ready(nodes, 60):
            raise RuntimeError("the cluster did not become ready within 60 s")
        progress(f"cluster ready on {[n.host for n in nodes]}; running {time_limit:g}s")
        config = {
            "urls": [f"http://{dns_name(i)}:{HTTP_PORT}" for i in range(replicas)],
            "seed": seed,
            "time_limit": time_limit,
            "workers": workers,
            "heartbeaters": 3,
            "submitters": 2,
            "producer_pairs": 2,
            "topology": topology,
        }
        (run_dir / "workload.json").write_text(json.dumps(config))
        client = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                network.client.netns,
                sys.executable,
                "-m",
                "jepsen_like",
                "workload",
                str(run_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(run_dir / "client.log").open("wb"),
        )
        nemesis: Nemesis
        if server is not None:
            schedule = plan(kinds, time_limit, seed, overlaps, pg_compatible)
            nemesis = PgNemesis(network, nodes, schedule, seed, progress, server)
        else:
            schedule = plan(kinds, time_limit, seed, overlaps)
            nemesis = Nemesis(network, nodes, schedule, seed, progress, spares)
        progress(f"nemesis: {len(schedule)} faults scheduled: {[p.kind for p in schedule]}")
        ticker = threading.Thread(target=progress.tick, args=(run_dir, client), daemon=True)
        ticker.start()
        nemesis.run()
        (run_dir / NEMESIS_DONE).touch()
        while not (run_dir / "workload.done").exists() and client.poll() is None:
            time.sleep(0.2)
        nemesis.heal_all()
        healed = wait_ready(nodes, 90)
        progress(f"healed; all replicas ready: {healed}")
        faults = sorted(nemesis.faults, key=lambda f: f.start)
        (run_dir / "faults.json").write_text(
            json.dumps(
                {"scheduled": [asdict(p) for p in schedule], "faults": [asdict(f) for f in faults]}
            )
        )
        (run_dir / "healed").touch()
        client.wait(timeout=180)
        return check_run(run_dir, timeout_s=10, grace_s=4)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for node in [*nodes, *spares]:
            node.signal(signal.SIGCONT)
            node.kill()
            node.unmount()
        if server is not None:
            server.finish()
        network.down()


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


class _Progress:
    """One line per event on stderr, plus a running count of operations."""

    def __init__(self, run_dir: Path) -> None:
        self.started = time.monotonic()
        self.log = (run_dir / "progress.log").open("a", buffering=1)

    def __call__(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        self.log.write(line + "\n")

    def tick(self, run_dir: Path, client: subprocess.Popen[bytes]) -> None:
        history = run_dir / "history.jsonl"
        while client.poll() is None:
            time.sleep(5)
            if history.exists():
                counts: dict[str, int] = {}
                with history.open() as lines:
                    for line in lines:
                        kind = json.loads(line)["type"]
                        counts[kind] = counts.get(kind, 0) + 1
                self(f"ops: {counts}")


def workload_main(run_dir: Path) -> None:
    """Entry point inside the client namespace."""
    import asyncio

    from jepsen_like.client import workload

    config = json.loads((run_dir / "workload.json").read_text())
    asyncio.run(workload(config, run_dir))
    os._exit(0)
