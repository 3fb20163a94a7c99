"""A 3-node etcd on loopback: a mature Raft store's cost per write on the same machine.

Debian's ``etcd-server`` (3.4): three ``etcd`` processes, each with its own data directory in
one temporary directory, client and peer ports on 127.0.0.1, every write fsynced on a
majority (etcd's default). S1 drives it the way it drives the registries: the same closed loop
over the same number of connections, spread over the three members, each request a put of a
new key with a 2 KB value through etcd's JSON gateway (``POST /v3/kv/put``, base64 key and
value). Not installed, or a version other than 3.4: skipped with the reason printed.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from benchmarks.systems import System
from tests.ports import free_port

ETCD = "etcd"
VERSION = "3.4."
VALUE_BYTES = 2048
_VALUE = base64.b64encode(bytes(i % 251 for i in range(VALUE_BYTES))).decode()


def find_etcd() -> tuple[Path | None, str]:
    """``(path of etcd 3.4, version)``, or ``(None, why not)``."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        return None, "etcd is not installed (Debian: apt-get install -y etcd-server)"
    try:
        done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{found} --version failed: {exc}"
    first = (done.stdout.splitlines() or [""])[0]  # "etcd Version: 3.4.23"
    version = first.rsplit(" ", 1)[-1]
    if done.returncode != 0 or not version.startswith(VERSION):
        return None, f"{found} is not etcd {VERSION}x: {(done.stdout + done.stderr)[-200:]!r}"
    return Path(found), version


@contextmanager
def cluster(members: int = 3) -> Iterator[System | None]:
    """A fresh ``members``-node etcd, or None (with the reason printed) when etcd is missing."""
    binary, version = find_etcd()
    if binary is None:
        print(f"etcd skipped: {version}", flush=True)
        yield None
        return
    names = [f"e{i}" for i in range(members)]
    clients = [free_port() for _ in names]
    peers = [free_port() for _ in names]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peers, strict=True))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as root:
        try:
            for name, client, peer in zip(names, clients, peers, strict=True):
                with (Path(root) / f"{name}.log").open("wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [
                                str(binary),
                                f"--name={name}",
                                f"--data-dir={Path(root) / name}",
                                f"--listen-client-urls=http://127.0.0.1:{client}",
                                f"--advertise-client-urls=http://127.0.0.1:{client}",
                                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                                f"--initial-cluster={initial}",
                                "--initial-cluster-state=new",
                                "--initial-cluster-token=bench",
                            ],
                            stdout=log,
                            stderr=log,
                        )
                    )
            yield System(
                f"etcd {version}",
                [f"http://127.0.0.1:{port}" for port in clients],
                [proc.pid for proc in procs],
                "/health",
                (),
            )
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait()


def put(client: aiohttp.ClientSession, url: str, n: int, prefix: str = "s1") -> Awaitable[int]:
    """Put key ``{prefix}/{n}`` (new for each ``n``) with a 2 KB value; the status."""
    key = base64.b64encode(f"{prefix}/{n}".encode()).decode()
    return _post(client, f"{url}/v3/kv/put", {"key": key, "value": _VALUE})


async def _post(client: aiohttp.ClientSession, url: str, payload: dict[str, str]) -> int:
    async with client.post(url, json=payload) as resp:
        await resp.read()
        return resp.status
