"""``mcp-mesh-registry backup / restore / inspect`` against real processes and files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import agent_body
from tests.ports import free_port
from tests.processes import CLUSTER_KEY, Registry
from tests.test_cluster import (
    Cluster,
    agent_ids,
    all_ready,
    converged,
    get_json,
    leader_of,
    register,
)
from tests.test_raft_in_process import wait_for
from tests.test_trust import Pki, call, tls_registry
from tests.timing import scaled

pytestmark = pytest.mark.slow


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def register_many(session: aiohttp.ClientSession, node: Registry, ids: list[str]) -> None:
    for agent_id in ids:
        assert await register(session, node, agent_id), agent_id


async def test_single_node_backup_inspect_restore_and_continue(
    tmp_path: Path, registries: list[Registry]
) -> None:
    node = Registry(tmp_path / "a", SNAPSHOT_EVERY="7")
    registries.append(node.start())
    backup_file = tmp_path / "registry.backup"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await register_many(session, node, [f"agent-{i}" for i in range(20)])

        made = cli("backup", "--out", str(backup_file), "--url", node.url)
        assert made.returncode == 0, made.stderr
        assert "applied index 20 (20 agents" in made.stdout
        digest = hashlib.sha256(backup_file.read_bytes()).hexdigest()
        checksum = Path(f"{backup_file}.sha256").read_text()
        assert checksum == f"{digest}  {backup_file.name}\n"
        verify = ["sha256sum", "-c", f"{backup_file.name}.sha256"]
        assert subprocess.run(verify, cwd=tmp_path, capture_output=True).returncode == 0

        table = cli("inspect", "--from", str(backup_file))
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert header.split()[:3] == ["agent_id", "agent_type", "runtime"]
        assert sorted(row.split()[0] for row in rows) == sorted(f"agent-{i}" for i in range(20))
        live = cli("inspect", "--json", "--url", node.url)
        assert {json.loads(line)["agent_id"] for line in live.stdout.splitlines()} == {
            f"agent-{i}" for i in range(20)
        }

        # A write after the backup is not in it.
        assert await register(session, node, "after-backup")
    node.stop()

    restored_dir = tmp_path / "restored"
    done = cli("restore", "--from", str(backup_file), "--data-dir", str(restored_dir))
    assert done.returncode == 0, done.stderr
    restored = Registry(restored_dir, SNAPSHOT_EVERY="7")
    registries.append(restored.start())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        assert await agent_ids(session, restored) == {f"agent-{i}" for i in range(20)}
        # New writes continue the log after the backup's index and survive a restart.
        await register_many(session, restored, [f"new-{i}" for i in range(10)])
        restored.stop()
        registries.append(restored.start())
        ids = await agent_ids(session, restored)
    assert ids == {f"agent-{i}" for i in range(20)} | {f"new-{i}" for i in range(10)}


def test_restore_refuses_a_used_directory_and_damaged_files(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    missing = cli("restore", "--from", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"))
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    assert not (tmp_path / "d").exists()

    backup_file = tmp_path / "b.backup"
    node_dir = tmp_path / "node"
    node = Registry(node_dir)
    node.start()
    try:
        assert cli("backup", "--out", str(backup_file), "--url", node.url).returncode == 0
    finally:
        node.stop()
    refused = cli("restore", "--from", str(backup_file), "--data-dir", str(used))
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
    assert sorted(p.name for p in used.iterdir()) == ["something"]

    data = backup_file.read_bytes()
    flipped = tmp_path / "flipped.backup"
    flipped.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(data[:-10])
    for damaged, message in ((flipped, "checksum mismatch"), (truncated, "truncated")):
        target = tmp_path / f"into-{damaged.stem}"
        result = cli("restore", "--from", str(damaged), "--data-dir", str(target))
        assert result.returncode == 1
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not target.exists()


def test_backup_needs_the_token_when_auth_is_on(tmp_path: Path, registries: list[Registry]) -> None:
    node = Registry(tmp_path / "a", AUTH_TOKEN="s3cret")
    registries.append(node.start())
    denied = cli("backup", "--out", str(tmp_path / "x"), "--url", node.url)
    assert denied.returncode == 1
    assert "401" in denied.stderr
    assert not (tmp_path / "x").exists()
    allowed = cli("backup", "--out", str(tmp_path / "x"), "--url", node.url, AUTH_TOKEN="s3cret")
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("mode", ["auto", "strict"])
async def test_backup_and_inspect_over_tls(
    tmp_path: Path, registries: list[Registry], mode: str
) -> None:
    """With TLS on the registry port the CLI speaks HTTPS with MCP_MESH_TLS_CERT/_KEY as its
    client certificate and MCP_MESH_TLS_CA for the server's: in the pod (`kubectl exec`, the
    registry's own environment and certificate, issued by the mesh CA as cert-manager does)
    and from an operator's machine (their own certificate, --url). What cannot be verified is
    one line and no file."""
    pki = Pki.make(tmp_path / "pki")
    mesh_cert, mesh_key = pki.org_a.issue("registry").write(pki.root, "mesh-server")
    node = tls_registry(
        tmp_path,
        registries,
        pki.env(mode, MCP_MESH_TLS_CERT=str(mesh_cert), MCP_MESH_TLS_KEY=str(mesh_key)),
    )
    greeter = pki.client(pki.org_a.agent("greeter"), "greeter")
    greeter.load_verify_locations(cadata=pki.org_a.pem.decode())  # the mesh CA serves here
    status, answer = await call(greeter, "POST", f"{node.url}/heartbeat", agent_body("greeter"))
    assert status == 200, answer

    in_pod = {k: v for k, v in node.env.items() if k.startswith(("MCP_MESH_", "REGISTRY_"))}
    out = tmp_path / "in-pod.backup"
    made = cli("backup", "--out", str(out), **in_pod)
    assert made.returncode == 0, made.stderr
    assert "(1 agents" in made.stdout
    shown = cli("inspect", "--json", **in_pod)
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["agent_id"] for line in shown.stdout.splitlines()] == ["greeter"]

    operator_cert, operator_key = pki.org_a.agent("operator").write(pki.root, "operator")
    operator = {
        "MCP_MESH_TLS_MODE": "auto",
        "MCP_MESH_TLS_CERT": str(operator_cert),
        "MCP_MESH_TLS_KEY": str(operator_key),
        "MCP_MESH_TLS_CA": str(pki.org_a.write(pki.root / "mesh-ca.pem")),
    }
    remote = tmp_path / "remote.backup"
    made = cli("backup", "--out", str(remote), "--url", node.url, **operator)
    assert made.returncode == 0, made.stderr
    assert backup_agents(remote) == backup_agents(out) == ["greeter"]

    # A server certificate the CA does not vouch for, or no CA given for another node (the
    # system's CAs do not know the mesh CA), and (strict) no client certificate.
    refused = [
        ({**operator, "MCP_MESH_TLS_CA": str(pki.root / "server-ca.pem")}, "verify failed"),
        ({**operator, "MCP_MESH_TLS_CA": ""}, "verify failed"),
    ]
    if mode == "strict":
        anonymous = {"MCP_MESH_TLS_CA": operator["MCP_MESH_TLS_CA"]}
        refused.append((anonymous, "client certificate required"))
    for env, why in refused:
        failed = cli("backup", "--out", str(tmp_path / "no.backup"), "--url", node.url, **env)
        assert failed.returncode == 1 and why in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "no.backup").exists()


def backup_agents(path: Path) -> list[str]:
    shown = cli("inspect", "--json", "--from", str(path))
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line)["agent_id"] for line in shown.stdout.splitlines()]


async def test_cluster_restore_on_three_nodes(tmp_path: Path, registries: list[Registry]) -> None:
    """The documented procedure: back up from any member, restore the same file into every
    member's empty data directory, start them all. They elect a leader and keep a quorum with
    one member down (each counts the others, not itself, as peers)."""
    original = Cluster(tmp_path / "original", registries)
    original.start_all()
    backup_file = tmp_path / "cluster.backup"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await all_ready(session, original.nodes)
        leader = await leader_of(session, original.nodes)
        await register_many(session, original.nodes[leader], [f"a-{i}" for i in range(30)])
        follower = original.nodes[(leader + 1) % 3]
        made = cli("backup", "--out", str(backup_file), "--url", follower.url)
        assert made.returncode == 0, made.stderr
        assert "(30 agents" in made.stdout  # the follower's backup waited for the writes
    for node in original.nodes:
        node.stop()

    fresh = Cluster(tmp_path / "restored", registries)
    for node in fresh.nodes:
        done = cli("restore", "--from", str(backup_file), "--data-dir", str(node.data_dir))
        assert done.returncode == 0, done.stderr
    fresh.start_all()
    expected = {f"a-{i}" for i in range(30)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await all_ready(session, fresh.nodes)
        for node in fresh.nodes:
            assert await agent_ids(session, node) == expected
        leader = await leader_of(session, fresh.nodes)
        await register_many(session, fresh.nodes[(leader + 1) % 3], ["after-restore"])
        await converged(session, fresh.nodes)

        down = (leader + 2) % 3
        fresh.nodes[down].kill()
        up = [node for i, node in enumerate(fresh.nodes) if i != down]
        assert await register(session, up[0], "one-member-down")
        fresh.start(down)
        await all_ready(session, fresh.nodes)
        await converged(session, fresh.nodes)
        for node in fresh.nodes:
            assert await agent_ids(session, node) == expected | {"after-restore", "one-member-down"}

    # A restored directory started next to a cluster that already runs without it refuses to
    # start (it would replay that cluster's log over the backup's view).
    extra_dir = tmp_path / "extra"
    assert cli("restore", "--from", str(backup_file), "--data-dir", str(extra_dir)).returncode == 0
    raft_port = free_port()
    extra = Registry(
        extra_dir,
        ENABLE_LEADER_ELECTION="true",
        ENCRYPTION_KEY=CLUSTER_KEY,
        REGISTRY_PEERS=f"{fresh.peers},127.0.0.1:{raft_port}",
        RAFT_PORT=str(raft_port),
    )
    command = [sys.executable, "-m", "registry"]
    refused = subprocess.run(command, env=extra.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "restored from a backup, but a cluster already runs" in refused.stderr

    # One member restored on its own into the running cluster: refused unless the cluster was
    # restored from the same backup (it would replace the backup's view with its own, and the
    # operator believe it restored); taken when it was (its log then agrees with theirs).
    second_file = tmp_path / "second.backup"
    assert cli("backup", "--out", str(second_file), "--url", up[0].url).returncode == 0
    member = fresh.nodes[down]
    member.stop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        status = await get_json(session, f"{up[0].url}/api/v1/cluster")
        assert (
            status["restored_from"]
            == json.loads(backup_file.read_bytes().split(b"\n")[1])["sha256"]
        )
    shutil.rmtree(member.data_dir)
    assert (
        cli("restore", "--from", str(second_file), "--data-dir", str(member.data_dir)).returncode
        == 0
    )
    refused = subprocess.run(command, env=member.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "was not restored from the same backup" in refused.stderr
    assert not (member.data_dir / "raft" / "dump.bin").exists()  # the log was not started
    again = subprocess.run(command, env=member.env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2, again.stderr[-2000:]  # and a second start is refused too
    shutil.rmtree(member.data_dir)
    assert (
        cli("restore", "--from", str(backup_file), "--data-dir", str(member.data_dir)).returncode
        == 0
    )
    fresh.start(down)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await all_ready(session, fresh.nodes)
        await converged(session, fresh.nodes)
        assert await agent_ids(session, fresh.nodes[down]) == expected | {
            "after-restore",
            "one-member-down",
        }

    # The same member restored on its own from a file the cluster was not restored from,
    # started while every other member is down: nobody answers its start's check, so it
    # starts. The members' hellos, once they are back, stop it before it follows them (their
    # log would replace the backup's view), and it is refused again at the next start; the
    # two others go on without it.
    for node in fresh.nodes:
        node.stop()
    shutil.rmtree(member.data_dir)
    assert (
        cli("restore", "--from", str(second_file), "--data-dir", str(member.data_dir)).returncode
        == 0
    )
    lone = fresh.start(down)
    wait_for(lambda: (member.data_dir / "raft" / "dump.bin").exists(), 20, "the lone start")
    others = [i for i in range(3) if i != down]
    for i in others:
        fresh.start(i)
    assert lone.proc is not None
    assert lone.proc.wait(timeout=scaled(30)) == 2, lone.log()[-2000:]
    assert "was not restored from the same backup" in lone.log()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await all_ready(session, [fresh.nodes[i] for i in others])
        assert await agent_ids(session, fresh.nodes[others[0]]) == expected | {
            "after-restore",
            "one-member-down",
        }
    again = subprocess.run(command, env=member.env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "was not restored from the same backup" in again.stderr
