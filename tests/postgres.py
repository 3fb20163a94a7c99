"""A private PostgreSQL server for tests: initdb into a temporary directory, a free loopback
port, its own socket directory, torn down after.

PostgreSQL refuses to run as root, so as root the server runs as ``nobody`` (``runuser``) in
a directory made for it outside pytest's tmp_path (whose parents are private to root).
Skips, with the reason, only when the server binaries are missing (Debian's ``postgresql``
package, installed by .ci/run; under CI=true a skip fails).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.config import Database
from tests.ports import free_port
from tests.timing import scaled

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "mcpmesh"
DATABASE = "registry"


def skip_without_server() -> None:
    if not (BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {BIN} (Debian package postgresql)")


@contextlib.contextmanager
def running() -> Iterator[Postgres]:
    """A fresh server for the ``with`` block (the ``postgres`` fixture of tests/conftest.py)."""
    skip_without_server()
    root = Path(tempfile.mkdtemp(prefix="mesh-pg-"))
    server = Postgres(root)
    try:
        server.init()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class Postgres:
    """One server; ``env`` is what a registry needs to use it (the guide's variable names)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = free_port()
        self._as_nobody = os.geteuid() == 0

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_TYPE": "postgresql",
            "DATABASE_HOST": "127.0.0.1",
            "DATABASE_PORT": str(self.port),
            "DATABASE_NAME": DATABASE,
            "DATABASE_USER": USER,
        }

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "nobody", "--"] if self._as_nobody else []
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=scaled(timeout), check=True
        )

    def init(self) -> None:
        self.sockets.mkdir(parents=True)
        if self._as_nobody:
            nobody = pwd.getpwnam("nobody")
            for path in (self.root, self.sockets):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self._run(
            str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8"
        )
        self.start()
        self._run(
            str(BIN / "createdb"), "-h", str(self.sockets), "-p", str(self.port), "-U", USER,
            DATABASE,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=on"
        self._run(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", str(int(scaled(30))), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"``: the server dies without a checkpoint (a crash, as far as its
        durability is concerned: recovery replays the WAL at the next start)."""
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def require_password(self, password: str) -> None:
        """TCP sessions must give ``password`` (scram-sha-256, PostgreSQL 15's default), as on a
        server made from the guide's postgres-secret; the tests' own psql keeps the socket."""
        self.psql(f"ALTER USER {USER} PASSWORD '{password}'")
        hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        (self.data / "pg_hba.conf").write_text(hba)  # overwritten in place: still the server's
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "reload")

    def database(self, name: str) -> Database:
        """A new empty database on this server, as a registry's DATABASE_* settings."""
        self.psql(f'CREATE DATABASE "{name}"')
        return Database(host="127.0.0.1", port=self.port, name=name, user=USER)

    def psql(self, sql: str) -> str:
        return self._run(
            str(BIN / "psql"), "-h", str(self.sockets), "-p", str(self.port),
            "-U", USER, "-d", DATABASE, "-At", "-c", sql,
        ).stdout.strip()  # fmt: skip
