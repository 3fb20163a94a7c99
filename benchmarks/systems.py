"""The two systems under test, started on loopback, and what they cost (CPU, memory).

Ours: three ``python -m registry`` processes replicating with Raft (ENCRYPTION_KEY set, every
commit fsynced on a majority), the same processes the cluster tests run. Theirs: the Go
``mcp-mesh-registry`` from the npm package, one process on SQLite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.go_registry import ensure_go_registry
from tests.processes import Registry, free_port
from tests.test_cluster import Cluster

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class System:
    """A running registry: the URLs a Service would spread requests over, and its processes."""

    name: str
    urls: list[str]
    pids: list[int]
    cluster: Cluster | None = None
    _cpu_mark: list[float] = field(default_factory=list)

    def mark(self) -> None:
        self._cpu_mark = [cpu_seconds(pid) for pid in self.pids]

    def cost(self) -> dict[str, list[float]]:
        """CPU seconds per node since :meth:`mark`, and peak RSS per node so far."""
        return {
            "cpu_seconds": [
                round(cpu_seconds(pid) - before, 2)
                for pid, before in zip(self.pids, self._cpu_mark, strict=True)
            ],
            "peak_rss_mib": [peak_rss_mib(pid) for pid in self.pids],
        }


def _wait_listening(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def ours() -> Iterator[System]:
    started: list[Registry] = []
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as root:
        cluster = Cluster(Path(root), started)
        try:
            cluster.start_all()
            yield System(
                "ours (3 replicas, Raft)",
                [node.url for node in cluster.nodes],
                [node.proc.pid for node in cluster.nodes if node.proc is not None],
                cluster,
            )
        finally:
            for node in started:
                if node.proc is not None and node.proc.poll() is None:
                    node.kill()


@contextmanager
def go() -> Iterator[System | None]:
    """The Go registry, or None (with the reason printed) when it cannot be fetched."""
    binaries, why_not = ensure_go_registry()
    if binaries is None:
        print(f"Go registry skipped: {why_not}")
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-go-") as root:
        env = {
            **os.environ,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "DATABASE_URL": str(Path(root) / "registry.db"),
        }
        with (Path(root) / "go.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(binaries / "mcp-mesh-registry")], env=env, stdout=log, stderr=log
            )
        try:
            _wait_listening(port)
            yield System("Go registry (1 node, SQLite)", [f"http://127.0.0.1:{port}"], [proc.pid])
        finally:
            proc.kill()
            proc.wait()
