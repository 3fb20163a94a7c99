"""Strangers and forgers on RAFT_PORT of a real 3-node cluster: each is cut off, nothing they
send is parsed, and the node they picked keeps serving as a member of the cluster."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replication import codec, wire
from tests.ports import free_port
from tests.processes import CLUSTER_KEY, Registry
from tests.test_cluster import Cluster
from tests.timing import scaled

pytestmark = pytest.mark.slow

KEY = CLUSTER_KEY  # tests/test_cluster.py's Cluster default


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {scaled(timeout)}s")
        time.sleep(0.05)


class Target:
    """A running cluster and the member the attacks go to (its leader at the start)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        nodes = cluster.nodes
        _poll(lambda: all(_get(f"{n.url}/ready")[0] == 200 for n in nodes), 30, "cluster ready")
        status = _poll(lambda: self._leader_status(), 20, "a leader")
        self.index = [cluster.address(i) for i in range(len(nodes))].index(status["leader"])
        self.node: Registry = nodes[self.index]
        self.port = cluster.raft_ports[self.index]
        self.writes = 0

    def _leader_status(self) -> dict[str, Any] | None:
        for node in self.cluster.nodes:
            code, status = _get(f"{node.url}/api/v1/cluster")
            if code == 200 and status["role"] == "leader":
                return dict(status)
        return None

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=scaled(5))

    def assert_serving(self) -> None:
        """Still ready, every member still connected to it, and a write through it commits."""
        node = self.node

        def members_connected() -> bool:
            code, status = _get(f"{node.url}/api/v1/cluster")
            return code == 200 and all(m["connected"] for m in status["members"])

        _poll(lambda: _get(f"{node.url}/ready")[0] == 200, 10, "target ready")
        _poll(members_connected, 10, "every member connected")
        self.writes += 1
        body = json.dumps({"id": f"after-attack-{self.writes}", "capabilities": ["c"]}).encode()
        request = urllib.request.Request(
            f"{node.url}/api/v1/agents", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=scaled(10)) as resp:
            assert resp.status == 200

    def log(self) -> str:
        return self.node.log_path.read_text()

    def sweeps(self) -> int:
        """Connections the node closed for not finishing the handshake in time: a test that
        expects a close at once checks this did not grow (the deadline is only a backstop)."""
        return self.log().count("no handshake in")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    started: list[Registry] = []
    cluster = Cluster(tmp_path_factory.mktemp("wire"), started)
    try:
        cluster.start_all()
        yield Target(cluster)
    finally:
        for node in started:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True once the node closes ``sock`` (whatever it sent before), False if it is still
    open after ``within`` seconds (stretched by TEST_TIME_SCALE)."""
    return answer_before_close(sock, within) is not None


def answer_before_close(sock: socket.socket, within: float) -> bytes | None:
    """What the node sent on ``sock`` before closing it; None if still open after ``within``
    seconds (stretched by TEST_TIME_SCALE)."""
    deadline = time.monotonic() + scaled(within)
    received = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return received
        except TimeoutError:
            return None
        if not chunk:
            return received
        received += chunk
    return None


def authenticated(target: Target, key: str = KEY) -> tuple[socket.socket, wire.Session]:
    """A connection that went through the handshake as a client holding ``key``."""
    sock = target.connect()
    handshake = wire.ClientHandshake(wire.Secret.from_key(key))
    sock.sendall(handshake.hello())
    reply = _read(sock, wire.REPLY_BYTES)
    finish, session = handshake.finish(reply)
    sock.sendall(finish)
    return sock, session


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def read_frame(sock: socket.socket, session: wire.Session) -> Any:
    header = _read(sock, wire.HEADER.size)
    return codec.decode(session.opener.open(header, _read(sock, wire.frame_length(header))))


def status_of(sock: socket.socket, session: wire.Session) -> Any:
    """The utility ``status`` answer on an authenticated connection."""
    sock.sendall(session.sealer.seal(codec.encode(["status"])))
    return read_frame(sock, session)


class _RunsCode:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_stranger_sending_garbage_is_cut_off(target: Target) -> None:
    sweeps = target.sweeps()
    with target.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: registry\r\n\r\n" + os.urandom(200))
        assert answer_before_close(sock, 2) == b""
    assert "client does not speak this wire" in target.log()
    assert target.sweeps() == sweeps
    target.assert_serving()


def test_a_pickle_that_would_run_code_is_never_unpickled(target: Target, tmp_path: Path) -> None:
    """The frame pysyncobj's own wire unpickles on arrival, and the same pickle inside a
    sealed frame from a key holder."""
    proof = tmp_path / "unpickled"
    sweeps = target.sweeps()
    payload = pickle.dumps(_RunsCode(proof), protocol=2)
    old_wire = zlib.compress(payload)
    with target.connect() as sock:
        sock.sendall(struct.pack("i", len(old_wire)) + old_wire)
        assert answer_before_close(sock, 2) == b""
    assert not proof.exists()  # checked after the close: an unpickle would have run by then
    sock, session = authenticated(target)
    with sock:
        sock.sendall(session.sealer.seal(payload))
        assert closed_by_peer(sock, 2)
    assert target.sweeps() == sweeps
    target.assert_serving()
    assert not proof.exists()


def test_an_oversized_length_prefix_closes_at_once(target: Target) -> None:
    sock, session = authenticated(target)
    with sock:
        assert status_of(sock, session)["self"] == target.cluster.address(target.index)
        sock.sendall(struct.pack(">I", 2**31))
        assert closed_by_peer(sock, 1)
    assert "frame length 2147483648 outside" in target.log()
    target.assert_serving()


def test_a_wrong_key_gets_no_session(target: Target) -> None:
    sweeps = target.sweeps()
    with target.connect() as sock:
        handshake = wire.ClientHandshake(wire.Secret.from_key("wrong-key-but-just-as-long-0123456"))
        sock.sendall(handshake.hello())
        reply = _read(sock, wire.REPLY_BYTES)
        with pytest.raises(wire.Refused, match="server failed authentication"):
            handshake.finish(reply)
        sock.sendall(os.urandom(wire.FINISH_BYTES))  # a guessed FINISH
        assert answer_before_close(sock, 2) == b""
    assert "client failed authentication" in target.log()
    assert target.sweeps() == sweeps
    target.assert_serving()


def test_a_tampered_frame_closes_the_connection(target: Target) -> None:
    sock, session = authenticated(target)
    with sock:
        frame = bytearray(session.sealer.seal(codec.encode(["status"])))
        frame[-1] ^= 1  # one bit of the tag
        sock.sendall(frame)
        assert closed_by_peer(sock, 2)
    target.assert_serving()


def test_a_replayed_frame_closes_the_connection(target: Target) -> None:
    """Within a connection (the counter moved on), and on a new one (new session keys)."""
    sock, session = authenticated(target)
    frame = session.sealer.seal(codec.encode(["status"]))
    with sock:
        sock.sendall(frame)
        assert read_frame(sock, session)["self"] == target.cluster.address(target.index)
        sock.sendall(frame)
        assert closed_by_peer(sock, 2)
    sock, _ = authenticated(target)
    with sock:
        sock.sendall(frame)
        assert closed_by_peer(sock, 2)
    assert target.log().count("a frame failed authentication") >= 2
    target.assert_serving()


def test_a_slow_handshake_is_closed(target: Target) -> None:
    """Silent, and trickling a valid HELLO a byte every 0.2 s (so never idle): both closed
    once the handshake deadline passes."""
    hello = iter(wire.ClientHandshake(wire.Secret.from_key(KEY)).hello())
    with target.connect() as silent, target.connect() as trickle:
        started = time.monotonic()
        open_ = {"silent": silent, "trickle": trickle}
        closed: dict[str, float] = {}
        while open_ and time.monotonic() - started < scaled(wire.HANDSHAKE_TIMEOUT + 3):
            if "trickle" in open_:
                with contextlib.suppress(OSError):  # closed: the read below sees it
                    trickle.sendall(bytes([next(hello)]))
            for name, sock in list(open_.items()):
                if closed_by_peer(sock, 0.1):
                    closed[name] = time.monotonic() - started
                    del open_[name]
        assert set(closed) == {"silent", "trickle"}
        assert min(closed.values()) >= wire.HANDSHAKE_TIMEOUT - 0.2
    assert "no handshake in" in target.log()
    target.assert_serving()


def test_an_unknown_wire_version_is_refused_with_a_log_line(target: Target) -> None:
    handshake = wire.ClientHandshake(wire.Secret.from_key(KEY), version=wire.WIRE_VERSION + 1)
    sweeps = target.sweeps()
    with target.connect() as sock:
        sock.sendall(handshake.hello())
        assert answer_before_close(sock, 2) == b""  # no REPLY
    assert f"client speaks wire version {wire.WIRE_VERSION + 1}" in target.log()
    assert target.sweeps() == sweeps
    target.assert_serving()


def test_a_reflected_hello_is_refused(tmp_path: Path, registries: list[Registry]) -> None:
    """Someone in a peer's place takes the HELLO a node sends it and sends it back to that
    node's own RAFT_PORT: the server's REPLY (with its MAC) would be just what the node's client
    expects, and the client's FINISH what the server expects, so the node would talk to itself
    through them. Its server refuses a HELLO carrying a nonce its own clients sent."""
    fake = socket.socket()
    fake.bind(("127.0.0.1", free_port()))
    fake.listen()
    fake_address = f"127.0.0.1:{fake.getsockname()[1]}"
    port = free_port()
    while f"127.0.0.1:{port}" < fake_address:  # pysyncobj dials from the higher address
        port = free_port()
    node = Registry(
        tmp_path / "reflected",
        ENABLE_LEADER_ELECTION="true",
        ENCRYPTION_KEY=KEY,
        RAFT_PORT=str(port),
        REGISTRY_PEERS=f"127.0.0.1:{port},{fake_address}",
    )
    registries.append(node.start())
    fake.settimeout(scaled(10))
    with contextlib.closing(fake), contextlib.closing(fake.accept()[0]) as dialled:
        hello = _read(dialled, wire.HELLO_BYTES)
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as mirror:
            mirror.sendall(hello)
            assert answer_before_close(mirror, 5) == b""
    assert "a HELLO with a nonce this node sent (a reflected handshake)" in node.log()
