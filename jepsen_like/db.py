"""The system under test: registry replicas as processes inside their network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from jepsen_like.hosts import HEADLESS, NAMESPACE, STATEFULSET, Network
from jepsen_like.lazyfs import Mount
from jepsen_like.pg_server import PG_DATABASE, PG_PORT, PG_USER

HTTP_PORT = 8080
KEY = "jepsen-cluster-key-0123456789abcdef"
UNLIMITED_REGISTRATIONS = {"REGISTRATION_RATE": "1000000", "REGISTRATION_BURST": "1000000"}
"""Every client runs in one namespace (one address): lift the per-address limit on
registration changes, which would otherwise refuse most of the workload."""


class Replica:
    """One StatefulSet pod: ``mcp-mesh-registry-<ordinal>`` with its data directory."""

    def __init__(
        self,
        network: Network,
        ordinal: int,
        run_dir: Path,
        env: dict[str, str],
        replicas: int | None = None,
    ) -> None:
        self.network = network
        # The StatefulSet's initial size; a pod above it (a scale-up) finds the cluster through
        # the lower ordinals and joins it.
        self.replicas = replicas or len(network.hosts)
        self.ordinal = ordinal
        self.data_dir = run_dir / f"pvc-{ordinal}"
        self.log_path = run_dir / f"n{ordinal}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        # The "PVC": a lazyfs mount over disk-<n> when the run may cut power, so that what was
        # not fsynced is lost with it (jepsen_like/lazyfs.py); a plain directory otherwise.
        self.disk: Mount | None = None

    @property
    def host(self) -> str:
        return self.network.hosts[self.ordinal].ip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{HTTP_PORT}"

    def start(self) -> None:
        """Start the process unless it is running: two overlapping faults on one replica (a
        kill, then a wipe that takes the same disk again) both start it when they heal, and a
        second process would fail to bind and orphan the first."""
        if self.alive():
            return
        env = {**os.environ, **self.environment(), **self.env}
        netns = self.network.hosts[self.ordinal].netns
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", "registry"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def environment(self) -> dict[str, str]:
        """The pod's environment: a StatefulSet member of a Raft cluster."""
        return {
            "POD_NAME": f"{STATEFULSET}-{self.ordinal}",
            "POD_NAMESPACE": NAMESPACE,
            "HEADLESS_SERVICE": HEADLESS,
            "REGISTRY_REPLICAS": str(self.replicas),
            "ENABLE_LEADER_ELECTION": "true",
            "ENCRYPTION_KEY": KEY,
            "REGISTRY_PORT": str(HTTP_PORT),
            "DATA_DIR": str(self.data_dir),
            "DATABASE_PATH": str(self.data_dir / "registry.db"),
            **UNLIMITED_REGISTRATIONS,
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def wipe(self) -> None:
        """The disk is lost (its PVC deleted): the node comes back to an empty one."""
        if self.disk is not None:
            self.disk = self.disk.replaced()
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def mount_disk(self) -> None:
        """Put the data directory on a lazyfs mount (before the first start)."""
        self.disk = Mount(self.data_dir.parent / f"disk-{self.ordinal}", self.data_dir).start()

    def power_loss(self) -> None:
        """The machine loses power: the process and every unsynced write are gone; the disk
        comes back with what was synced (restart with :meth:`start`)."""
        self.kill()
        if self.disk is not None:
            self.disk.power_loss()
            self.disk = Mount(self.disk.backing, self.disk.mountpoint).start()

    @staticmethod
    def power_loss_together(replicas: list[Replica]) -> None:
        """Several machines lose power at the same instant: every process is killed before
        any disk drops what was not synced, so none of them can still sync while another's
        disk is being remounted (one :meth:`power_loss` after another would let the last ones
        run on for a few hundred ms)."""
        for replica in replicas:
            replica.kill()
        for replica in replicas:
            replica.power_loss()

    def unmount(self) -> None:
        if self.disk is not None:
            self.disk.power_loss()
            self.disk = None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, object]:
        """GET from inside the client namespace (the harness itself has no route there)."""
        return self.request("GET", path, timeout)

    def request(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, object]:
        """An HTTP request from inside the client namespace; (0, reason) when unanswered."""
        code = (
            "import json,sys,urllib.request,urllib.error\n"
            "try:\n"
            f"    q=urllib.request.Request({self.url + path!r}, method={method!r})\n"
            f"    r=urllib.request.urlopen(q, timeout={timeout})\n"
            "    print(json.dumps([r.status, json.load(r)]))\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(json.dumps([e.code, None]))\n"
            "except Exception as e:\n"
            "    print(json.dumps([0, str(e)]))\n"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", self.network.client.netns, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
        )
        status, body = json.loads(out.stdout or "[0, null]")
        return int(status), body


def wait_ready(replicas: list[Replica], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r.alive() and r.get("/ready")[0] == 200 for r in replicas):
            return True
        time.sleep(0.5)
    return False


class PgReplica(Replica):
    """One pod of a Deployment in the PostgreSQL topology: no PVC, no Raft, no peers; the
    log is the database's. ``data_dir`` is only its scratch space (an ``emptyDir``)."""

    def __init__(
        self, network: Network, ordinal: int, run_dir: Path, env: dict[str, str], database: str
    ) -> None:
        super().__init__(network, ordinal, run_dir, env)
        self.data_dir = run_dir / f"scratch-{ordinal}"
        self.database = database

    def environment(self) -> dict[str, str]:
        return {
            "POD_NAME": f"{STATEFULSET}-pg-{self.ordinal}",
            "POD_NAMESPACE": NAMESPACE,
            "REGISTRY_PORT": str(HTTP_PORT),
            "DATA_DIR": str(self.data_dir),
            "DATABASE_PATH": str(self.data_dir / "registry.db"),
            "DATABASE_TYPE": "postgresql",
            "DATABASE_HOST": self.database,
            "DATABASE_PORT": str(PG_PORT),
            "DATABASE_NAME": PG_DATABASE,
            "DATABASE_USER": PG_USER,
            # As tests/test_postgres_replicas.py's FAST: the decider's lock is retried (and its
            # session checked) every 200 ms, and a write gives up after 3 s.
            "LEADER_ELECTION_RETRY_PERIOD": "200ms",
            "WRITE_TIMEOUT": "3s",
            **UNLIMITED_REGISTRATIONS,
        }

    def wipe(self) -> None:
        """A pod's scratch space goes with the pod (there is nothing else to lose)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


def decider(replicas: list[Replica]) -> tuple[int, int] | None:
    """The ordinal and term of a replica that reports itself the decider (PostgreSQL
    topology), if one does."""
    for replica in replicas:
        if not replica.alive():
            continue
        status, body = replica.get("/api/v1/cluster")
        if status == 200 and isinstance(body, dict) and body.get("role") == "decider":
            return replica.ordinal, int(body.get("term") or 0)
    return None


def leader(replicas: list[Replica]) -> int | None:
    """The ordinal of the replica that reports itself leader, if one does."""
    for replica in replicas:
        if not replica.alive():
            continue
        status, body = replica.get("/api/v1/cluster")
        if status == 200 and isinstance(body, dict) and body.get("role") == "leader":
            return replica.ordinal
    return None
