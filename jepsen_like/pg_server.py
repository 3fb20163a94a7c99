"""The PostgreSQL topology's database: one PostgreSQL 15 server on a host of its own.

The server runs in the database host's network namespace (``Network.database``), listening
only on that namespace's address, with ``fsync=on``: it is the pod behind the ``postgres``
Service of k8s/overlays/postgresql, and the replicas reach it across the bridge, where the
nemesis can cut them off. PostgreSQL refuses to run as root, so it runs as ``nobody``
(``runuser``), from Debian's binaries in :data:`BIN`.

Its data directory is ``pg/data`` in the run directory, kept after the run like the Raft
topology's PVCs. ``nobody`` must be able to reach it; a run directory below a directory private
to root (pytest's temporary directories are) cannot give it that, so the server then lives in
a directory of its own under /tmp and is moved into the run directory at the end.

Faults act on every process of the server at once, found as the processes of its network
namespace (the postmaster and its backends, nothing else runs there): SIGKILL for a crash
(the next start is crash recovery: the WAL replayed from the last checkpoint), SIGSTOP and
SIGCONT for a pause.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from jepsen_like.hosts import SUBNET, Host

BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
PG_USER = "mcpmesh"
PG_DATABASE = "registry"
START_TIMEOUT_S = 60
"""Longest ``pg_ctl start`` waits for the server to accept connections (crash recovery
included: a few seconds at most for a run's WAL)."""


def available() -> str | None:
    """Why this machine cannot run the PostgreSQL topology, or None when it can."""
    if not (BIN / "postgres").exists():
        return f"PostgreSQL server binaries not found in {BIN} (Debian package postgresql-15)"
    if shutil.which("runuser") is None:
        return "`runuser` is not installed (util-linux)"
    return None


class PgServer:
    """One server in ``host``'s namespace; its files under ``run_dir/pg``."""

    def __init__(self, host: Host, run_dir: Path) -> None:
        self.host = host
        self.home = run_dir / "pg"
        self._final_home = self.home
        self.sockets = self.home / "sockets"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def _as_nobody(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.host.netns, "runuser", "-u", "nobody", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def init(self) -> None:
        """initdb, start, and create the registry's database and user (trust authentication:
        only the run's own hosts can reach it)."""
        self.home.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        if not self._reachable_by(nobody.pw_uid, nobody.pw_gid):
            self.home.rmdir()
            self.home = Path(tempfile.mkdtemp(prefix="jl-pg-"))
            self.sockets = self.home / "sockets"
        self.sockets.mkdir(exist_ok=True)
        for path in (self.home, self.sockets):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self._as_nobody(
            str(BIN / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"
        )
        with (self.data / "pg_hba.conf").open("a") as hba:  # the bridge's hosts, no password
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self.start()
        self._as_nobody(
            str(BIN / "createdb"), "-h", str(self.sockets), "-p", str(PG_PORT), "-U", PG_USER,
            PG_DATABASE,
        )  # fmt: skip

    def _reachable_by(self, uid: int, gid: int) -> bool:
        """Whether ``nobody`` can enter :attr:`home` (every directory above it searchable)."""
        os.chown(self.home, uid, gid)
        probe = subprocess.run(
            ["runuser", "-u", "nobody", "--", "test", "-w", str(self.home)], check=False
        )
        return probe.returncode == 0

    def start(self) -> None:
        """Start the server unless it runs; returns once it accepts connections (after crash
        recovery when it was killed)."""
        if self.pids():
            return
        options = (
            f"-c listen_addresses={self.host.ip} -p {PG_PORT} -k {self.sockets} -c fsync=on"
            " -c max_connections=100"
        )
        self._as_nobody(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", options,
            "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip

    def pids(self) -> list[int]:
        """Every process in the database host's namespace: the server's."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.host.netns], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def postmaster(self) -> int | None:
        """The postmaster's pid, from its pid file, if the file is there."""
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def kill(self) -> list[int]:
        """SIGKILL the postmaster and every backend (a crash: no checkpoint, no clean
        shutdown); returns the pids killed once all of them are gone."""
        killed: list[int] = []
        deadline = time.monotonic() + 30
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
            time.sleep(0.05)
        return killed

    def pause(self) -> list[int]:
        """SIGSTOP the postmaster first (it forks no backend once stopped), then the rest."""
        first = self.postmaster()
        if first is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(first, signal.SIGSTOP)
        stopped = [] if first is None else [first]
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            if pid not in stopped:
                stopped.append(pid)
        return stopped

    def resume(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def finish(self) -> None:
        """End of run: the server killed, its files where the run directory expects them."""
        self.resume()
        self.kill()
        if self.home != self._final_home and self.home.exists():
            shutil.rmtree(self._final_home, ignore_errors=True)
            shutil.move(str(self.home), str(self._final_home))
            self.home = self._final_home
