"""The image for real: build the Dockerfile with podman and run a 3-replica cluster from it.

The image is built on the Dockerfile's default BASE_IMAGE (the official slim Python image)
wherever its container registry answers. Only where none is reachable (as on the development
machine, see ../shared/notes/machine.md) is the base bootstrapped locally instead: debootstrap of
Debian bookworm with python3 and python3-venv, imported as localhost/debian-python:bookworm and
kept for later runs. That fallback is not a skip; which base was used, and why, is printed and
recorded as the suite's ``container_base_image`` and ``container_base_image_reason`` properties
(JUnit XML) and each test's ``base_image`` and ``base_image_reason`` user properties. The three
containers share a podman network on which each answers to its StatefulSet DNS name
(mcp-mesh-registry-<i>.mcp-mesh-registry-headless.mcp-mesh.svc.cluster.local), and get the ha
overlay's pod environment and its pod security (read-only root, /tmp tmpfs, no capabilities, no
privilege escalation, the image's non-root user). Requests are made from inside the containers
(`podman exec ... python3`), so nothing listens on the host.

The guide's Example 2 (k8s/overlays/postgresql: three replicas of a Deployment on one
PostgreSQL) runs on the host's network instead, against the test's private PostgreSQL server
on loopback (no container registry here serves the guide's postgres:15-alpine image).

Needs root and `apt-get install -y podman buildah debootstrap runc`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replication import wire
from tests.ports import free_port
from tests.postgres import Postgres
from tests.test_deploy import GUIDE_POSTGRES_SECRET, K8S, REPO, kustomize, pod_env
from tests.timing import scaled

pytestmark = [pytest.mark.container, pytest.mark.slow]

LOCAL_BASE = "localhost/debian-python:bookworm"
IMAGE = "localhost/mcp-mesh/registry:test"
SUFFIX = "mcp-mesh-registry-headless.mcp-mesh.svc.cluster.local"
REPLICAS = 3

# GET/POST from inside a container: prints {"status": ..., "body": ...}.
FETCH = """\
import json, sys, urllib.error, urllib.request
url, method, token, body = sys.argv[1:5]
request = urllib.request.Request(url, data=body.encode() or None, method=method)
if token:
    request.add_header("Authorization", "Bearer " + token)
if body:
    request.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        status, text = response.status, response.read().decode()
except urllib.error.HTTPError as exc:
    status, text = exc.code, exc.read().decode()
except OSError as exc:
    status, text = 0, str(exc)
print(json.dumps({"status": status, "body": text}))
"""


class Podman:
    """podman with runc and the containers.conf this machine needs (machine.md)."""

    def __init__(self, workdir: Path) -> None:
        conf = workdir / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\npids_limit = 0\n")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", "--runtime", "runc", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])}... failed:\n{done.stderr[-3000:]}")
        return done


def debian_mirror() -> str:
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in [*sources, Path("/etc/apt/sources.list")]:
        if path.exists():
            for uri in re.findall(
                r"(?:URIs:|deb)\s+(https?://\S+/debian)\b(?!-)", path.read_text()
            ):
                return uri
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman buildah debootstrap runc)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install -y runc)")
    if os.geteuid() != 0:
        pytest.skip("the container test runs rootful podman: it needs root")
    return Podman(tmp_path_factory.mktemp("podman"))


def qualified(image: str) -> str:
    """``image`` with its registry, as Docker reads a name without one (docker.io, and
    ``library/`` for an official image): podman's short-name lookup may be set up otherwise."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def dockerfile_base() -> str:
    """The Dockerfile's default BASE_IMAGE (read from it, so the test follows any change)."""
    found = re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert found, "the Dockerfile declares no default BASE_IMAGE"
    return qualified(found.group(1))


def registry_unreachable(image: str, timeout: float = 5.0) -> str | None:
    """Why the registry holding ``image`` does not answer, or None when it does. Any HTTP
    answer counts (an anonymous ``/v2/`` gets 401): a registry that answers and then refuses
    the pull is a failure to report, not a reason to build on another base."""
    host = image.split("/", 1)[0]
    url = f"https://{'registry-1.docker.io' if host == 'docker.io' else host}/v2/"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
    return None


@dataclass(frozen=True)
class Base:
    """The base an image was built on and why that one: a fallback must say so in the report."""

    image: str
    reason: str


@pytest.fixture(scope="module")
def base(
    podman: Podman,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    record_testsuite_property: Callable[[str, object], None],
) -> Base:
    """The Dockerfile's default base where a registry has it, else the debootstrapped one."""
    default = dockerfile_base()
    if podman("image", "exists", default, check=False).returncode == 0:
        chosen = Base(default, "the Dockerfile's default, already in local storage")
    elif (why := registry_unreachable(default, timeout=scaled(5))) is None:
        podman("pull", default, timeout=600)
        chosen = Base(default, "the Dockerfile's default, pulled")
    else:
        chosen = Base(
            bootstrapped_base(podman, tmp_path_factory),
            f"fallback: no container registry reachable ({why}), so not the Dockerfile's "
            f"default {default}",
        )
    record_testsuite_property("container_base_image", chosen.image)
    record_testsuite_property("container_base_image_reason", chosen.reason)
    # Printed past the output capture: the run's output says which base, pass or fail.
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\ncontainer test base image: {chosen.image} ({chosen.reason})")
    return chosen


@pytest.fixture(autouse=True)
def _record_base(request: pytest.FixtureRequest) -> None:
    """Each test of the image names in its report the base the image was built on."""
    if "image" in request.fixturenames:
        base: Base = request.getfixturevalue("base")
        request.node.user_properties += [
            ("base_image", base.image),
            ("base_image_reason", base.reason),
        ]


def bootstrapped_base(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian bookworm with python3 from the Debian mirror, for machines without a container
    registry; imported once and kept in podman's storage."""
    if podman("image", "exists", LOCAL_BASE, check=False).returncode == 0:
        return LOCAL_BASE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install -y debootstrap)")
    rootfs = tmp_path_factory.mktemp("rootfs")
    try:
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
                str(rootfs),
                debian_mirror(),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", LOCAL_BASE],
            stdin=tar.stdout,
            env=podman.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tar.wait()
        assert imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return LOCAL_BASE


@pytest.fixture(scope="module")
def image(podman: Podman, base: Base, tmp_path_factory: pytest.TempPathFactory) -> str:
    args = [
        "build",
        "--isolation=chroot",
        "--format=docker",  # keeps HEALTHCHECK (the OCI format has none)
        "--build-arg",
        f"BASE_IMAGE={base.image}",
        "-t",
        IMAGE,
    ]
    # pip in the builder trusts the host's CA bundle (egress may pass a TLS-inspecting proxy).
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
        pip_conf.write_text("[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\n")
        args += ["-v", f"{bundle}:/etc/ssl/certs/host-ca-bundle.crt:ro"]
        args += ["-v", f"{pip_conf}:/etc/pip.conf:ro"]
    # Run by image id, not by tag: another checkout's run may retag IMAGE meanwhile.
    iidfile = tmp_path_factory.mktemp("iid") / "iid"
    podman(*args, "--iidfile", str(iidfile), str(REPO), timeout=1200)
    return iidfile.read_text().strip()


@pytest.mark.parametrize(
    ("name", "pulled"),
    [
        ("python:3.12-slim", "docker.io/library/python:3.12-slim"),
        ("someone/image:1", "docker.io/someone/image:1"),
        ("quay.io/org/image:1", "quay.io/org/image:1"),
        ("localhost/debian-python:bookworm", "localhost/debian-python:bookworm"),
        ("127.0.0.1:5000/image", "127.0.0.1:5000/image"),
    ],
)
def test_base_names_are_read_as_docker_reads_them(name: str, pulled: str) -> None:
    assert qualified(name) == pulled


def test_the_default_base_is_the_dockerfiles() -> None:
    assert re.fullmatch(r"docker\.io/library/python:[\w.-]+", dockerfile_base())


def test_a_registry_that_does_not_answer_is_named_with_the_cause() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        why = registry_unreachable(f"127.0.0.1:{closed}/image:1")
    assert why is not None and why.startswith(f"https://127.0.0.1:{closed}/v2/: "), why
    assert "Connection refused" in why, why


def test_image_is_non_root_small_and_complete(podman: Podman, image: str) -> None:
    (info,) = json.loads(podman("image", "inspect", image).stdout)
    cfg = info["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["mcp-mesh-registry"]
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9090/tcp", "4321/tcp"}
    assert "/data" in cfg["Volumes"]
    assert "/health" in " ".join(info["Healthcheck"]["Test"])
    probe = (
        "id -u; id -g; stat -c %u /data; "
        "for t in sqlite3 wget df python3 mcp-mesh-registry; do command -v $t; done; "
        "for c in gcc cc g++ clang make; do command -v $c && echo COMPILER $c; done; true"
    )
    out = podman("run", "--rm", "--entrypoint", "sh", image, "-c", probe).stdout.split()
    assert out[:3] == ["10001", "10001", "10001"]
    assert "/usr/bin/sqlite3" in out and "/opt/venv/bin/mcp-mesh-registry" in out
    assert "/usr/bin/wget" in out and "/usr/bin/df" in out  # the guide's debugging commands
    assert "COMPILER" not in out, out
    version = podman("run", "--rm", image, "--version").stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    bad = podman("run", "--rm", "-e", "AGENT_TIMEOUT=sixty", image, check=False)
    assert bad.returncode == 2 and "AGENT_TIMEOUT" in bad.stderr


class Cluster:
    """Three registry containers as the StatefulSet's pods would be."""

    def __init__(self, podman: Podman, image: str) -> None:
        self.podman = podman
        self.image = image
        tag = uuid.uuid4().hex[:8]
        self.network: str | None = f"mcp-mesh-test-{tag}"
        """The podman network the containers share (None: the host's)."""
        self.names = [f"mcp-mesh-registry-{i}-{tag}" for i in range(REPLICAS)]
        self.volumes = [f"{name}-data" for name in self.names]
        self.envs = [pod_env(kustomize(K8S / "overlays" / "ha"), i) for i in range(REPLICAS)]
        self.token = self.envs[0]["AUTH_TOKEN"]
        self.ports = [(8080, 9090)] * REPLICAS
        """Each container's HTTP and metrics ports, as requests inside it reach them."""

    def start(self, i: int) -> None:
        env = dict(self.envs[i])
        env.pop("POD_IP")  # the pod IP is not known before the container starts
        env_args = [arg for k, v in sorted(env.items()) for arg in ("-e", f"{k}={v}")]
        self.podman(
            "run",
            "--detach",
            "--name",
            self.names[i],
            "--network",
            self.network,
            "--network-alias",
            f"mcp-mesh-registry-{i}.{SUFFIX}",
            "--hostname",
            f"mcp-mesh-registry-{i}",
            # the pod's securityContext
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            f"{self.volumes[i]}:/data",
            *env_args,
            self.image,
        )

    def __enter__(self) -> Cluster:
        if self.network is not None:
            self.podman("network", "create", self.network)
        for i in range(REPLICAS):
            self.start(i)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            self.podman("rm", "--force", "--time", "2", name, check=False)
        for volume in self.volumes:
            self.podman("volume", "rm", "--force", volume, check=False)
        if self.network is not None:
            self.podman("network", "rm", "--force", self.network, check=False)

    def request(
        self, i: int, path: str, method: str = "GET", body: Any = None, token: str = ""
    ) -> tuple[int, Any]:
        http, metrics = self.ports[i]
        port = metrics if path == "/metrics:9090" else http
        path = path.removesuffix(":9090")
        payload = json.dumps(body) if body is not None else ""
        done = self.podman(
            "exec",
            self.names[i],
            "python3",
            "-c",
            FETCH,
            f"http://127.0.0.1:{port}{path}",
            method,
            token,
            payload,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return 0, done.stderr
        answer = json.loads(done.stdout)
        text = answer["body"]
        try:
            return answer["status"], json.loads(text)
        except ValueError:
            return answer["status"], text

    def status(self, i: int) -> dict[str, Any]:
        code, body = self.request(i, "/api/v1/cluster")
        return body if code == 200 and isinstance(body, dict) else {}

    def wait(self, what: str, check: Any, timeout: float = 90) -> Any:
        """Poll ``check`` until truthy; fail with the logs after ``timeout`` (scaled) seconds."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                logs = "\n".join(
                    self.podman("logs", "--tail", "15", n, check=False).stderr for n in self.names
                )
                raise AssertionError(f"{what} not within {timeout} s; logs:\n{logs}")
            time.sleep(0.5)

    def ready(self, members: list[int]) -> bool:
        return all(self.request(i, "/ready")[0] == 200 for i in members)

    def agreed_leader(self, members: list[int]) -> str | None:
        statuses = [self.status(i) for i in members]
        leaders = {s.get("leader") for s in statuses}
        roles = sorted(s.get("role", "") for s in statuses)
        if len(leaders) == 1 and None not in leaders and roles.count("leader") == 1:
            return str(leaders.pop())
        return None

    def ordinal(self, raft_address: str) -> int:
        match = re.fullmatch(rf"mcp-mesh-registry-(\d+)\.{re.escape(SUFFIX)}:4321", raft_address)
        assert match, raft_address
        return int(match.group(1))


@pytest.fixture(scope="module")
def cluster(podman: Podman, image: str) -> Iterator[Cluster]:
    with Cluster(podman, image) as running:
        yield running


ALL = list(range(REPLICAS))


def test_three_containers_form_one_cluster(cluster: Cluster) -> None:
    cluster.wait("all three ready", lambda: cluster.ready(ALL))
    leader = cluster.wait("one agreed leader", lambda: cluster.agreed_leader(ALL))
    expected = {f"mcp-mesh-registry-{i}.{SUFFIX}:4321" for i in ALL}
    for i in ALL:
        status = cluster.status(i)
        assert status["mode"] == "raft" and status["leader"] == leader
        assert status["instance_id"] == f"mcp-mesh-registry-{i}"
        assert {m["id"] for m in status["members"]} == expected
        assert all(m["connected"] for m in status["members"]), status
    for name in cluster.names:  # the process is the image's user, with no capabilities
        proc = cluster.podman("exec", name, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", proc, re.MULTILINE), proc
        assert re.search(r"^CapEff:\s+0+$", proc, re.MULTILINE), proc
        assert cluster.podman("exec", name, "id", "-u").stdout.strip() == "10001"
        # the image's HEALTHCHECK (podman runs no timers here: run it by hand)
        assert cluster.podman("healthcheck", "run", name, check=False).returncode == 0
        done = cluster.podman("logs", name)
        logs = done.stdout + done.stderr
        # the peer wire (always keyed: replication/wire.py) rather than pysyncobj's
        assert "raft leader changed" in logs and f'"wire_version":{wire.WIRE_VERSION}' in logs


def test_the_guides_api_on_the_cluster(cluster: Cluster) -> None:
    cluster.wait("all three ready", lambda: cluster.ready(ALL))
    agent = {"id": "guide-agent", "capabilities": ["test"], "endpoint": "http://guide:8080"}
    follower = next(i for i in ALL if cluster.status(i)["role"] == "follower")
    assert cluster.request(follower, "/api/v1/agents", "POST", agent)[0] == 401  # AUTH_TOKEN
    code, stored = cluster.request(follower, "/api/v1/agents", "POST", agent, cluster.token)
    assert code == 200 and stored["id"] == "guide-agent", stored

    def everywhere() -> bool:
        for i in ALL:
            code, body = cluster.request(i, "/api/v1/agents")
            if code != 200 or "guide-agent" not in {a["id"] for a in body["agents"]}:
                return False
        return True

    cluster.wait("the agent on every replica", everywhere, timeout=30)
    for i in ALL:
        code, health = cluster.request(i, "/health")
        assert code == 200 and health["status"] == "healthy"
        code, caps = cluster.request(i, "/api/v1/capabilities")
        assert code == 200 and "test" in {c["name"] for c in caps["capabilities"]}
        code, text = cluster.request(i, "/metrics:9090")
        assert code == 200 and 'mcp_registry_agents_total{status="healthy"}' in text
        assert "mcp_registry_raft_is_leader" in text
        rows = cluster.podman(
            "exec", cluster.names[i], "sqlite3", "/data/registry.db", "SELECT * FROM agents;"
        ).stdout
        assert "guide-agent" in rows
    # the guide's load test, run inside a follower against its own API with the Secret's token
    load = cluster.podman(
        "exec",
        "-i",
        "-e",
        f"AUTH_TOKEN={cluster.token}",
        cluster.names[follower],
        "python3",
        "-",
        "--url",
        "http://127.0.0.1:8080",
        "--cleanup",
        stdin=(K8S / "scripts" / "test_registry_load.py").read_text(),
        timeout=180,
        check=False,
    )
    assert load.returncode == 0, load.stdout + load.stderr
    assert "Success rate: 100.0%" in load.stdout
    # k8s/README.md "Backup and restore": an online backup taken inside a pod, then inspected
    name = cluster.names[follower]
    made = cluster.podman(
        "exec",
        "-e",
        f"AUTH_TOKEN={cluster.token}",
        name,
        "mcp-mesh-registry",
        "backup",
        "--out",
        "/tmp/registry.backup",
    ).stdout
    assert "written to /tmp/registry.backup" in made
    listed = cluster.podman(
        "exec", name, "mcp-mesh-registry", "inspect", "--from", "/tmp/registry.backup"
    ).stdout
    assert "guide-agent" in listed


def test_the_guides_debug_commands_inside_a_pod(cluster: Cluster) -> None:
    """The guide's "Debug Registry Issues": `kubectl exec -it mcp-mesh-registry-0 -- sh`, then,
    inside, `wget -O- http://localhost:8080/health` and `df -h /data`, literally (through sh)."""
    cluster.wait("all three ready", lambda: cluster.ready(ALL))
    name = cluster.names[0]
    health = cluster.podman("exec", name, "sh", "-c", "wget -O- http://localhost:8080/health")
    assert json.loads(health.stdout)["status"] == "healthy", health.stdout
    assert "200 OK" in health.stderr  # wget's own report of the answer
    check_df_data(cluster.podman("exec", name, "sh", "-c", "df -h /data").stdout)
    down = cluster.podman("exec", name, "wget", "-O-", "http://localhost:1/health", check=False)
    assert down.returncode != 0  # wget reports a refused connection as a failure


def check_df_data(out: str) -> None:
    """`df -h /data` printed its header and one line for the filesystem mounted at /data."""
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["Filesystem", "Size"], out
    assert len(rows) == 1 and rows[0].split()[-1] == "/data", out
    assert re.fullmatch(r"[\d.,]+[KMGT]?", rows[0].split()[1]), out


def test_the_cluster_survives_killing_the_leader(cluster: Cluster) -> None:
    cluster.wait("all three ready", lambda: cluster.ready(ALL))
    old = cluster.wait("one agreed leader", lambda: cluster.agreed_leader(ALL))
    before = {"id": "before-failover", "capabilities": ["test"], "endpoint": "http://b:8080"}
    code, body = cluster.request(
        cluster.ordinal(old), "/api/v1/agents", "POST", before, cluster.token
    )
    assert code == 200, body  # acknowledged: on a majority's disks
    old_term = cluster.status(0)["term"]
    victim = cluster.ordinal(old)
    survivors = [i for i in ALL if i != victim]
    cluster.podman("kill", "--signal", "KILL", cluster.names[victim])

    new = cluster.wait("a new leader", lambda: cluster.agreed_leader(survivors), timeout=60)
    assert new != old
    assert cluster.status(survivors[0])["term"] > old_term
    agent = {"id": "after-failover", "capabilities": ["test"], "endpoint": "http://x:8080"}

    def written() -> bool:
        code, _ = cluster.request(survivors[0], "/api/v1/agents", "POST", agent, cluster.token)
        return code == 200

    cluster.wait("a write after failover", written, timeout=30)
    for i in survivors:
        code, body = cluster.request(i, "/api/v1/agents/before-failover")
        assert code == 200, body  # acknowledged before the failover, still there

    # The killed container comes back with its volume (and, like a rescheduled pod, often a new
    # IP), rejoins and catches up. Survivors give up connect attempts to the vanished old IP
    # after connectionTimeout and resolve the name again (before that fix: ~127 s here).
    cluster.podman("start", cluster.names[victim])
    cluster.wait("all three ready again", lambda: cluster.ready(ALL), timeout=45)

    def same_view() -> bool:
        digests = {cluster.status(i).get("view_digest") for i in ALL}
        return len(digests) == 1 and None not in digests

    cluster.wait("one view on all three", same_view, timeout=60)
    code, body = cluster.request(victim, "/api/v1/agents/after-failover")
    assert code == 200, body


class Deployment(Cluster):
    """k8s/overlays/postgresql's three replicas (the guide's Example 2) on the host's network,
    where the test's PostgreSQL server listens on loopback; it answers to the name the guide's
    ConfigMap gives it (``DATABASE_HOST: postgres``, through ``--add-host``), and only its port
    differs from the ConfigMap's 5432 (a private server takes a free one). Each container takes
    free ports of its own for HTTP and metrics, and a tmpfs at /data for its emptyDir."""

    def __init__(self, podman: Podman, image: str, server: Postgres) -> None:
        super().__init__(podman, image)
        objs = kustomize(K8S / "overlays" / "postgresql")
        self.envs = [pod_env(objs, i) for i in range(REPLICAS)]
        self.token = self.envs[0]["AUTH_TOKEN"]
        self.ports = [(free_port(), free_port()) for _ in range(REPLICAS)]
        self.network, self.volumes = None, []  # the host's network; /data is a tmpfs
        for env, (http, metrics) in zip(self.envs, self.ports, strict=True):
            env.pop("POD_IP")
            env |= {"DATABASE_PORT": str(server.port), "REGISTRY_PORT": str(http)}
            env |= {"METRICS_PORT": str(metrics)}

    def start(self, i: int) -> None:
        self.podman(
            "run", "--detach", "--name", self.names[i], "--network", "host",
            "--add-host", "postgres:127.0.0.1",
            "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/data",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            *[arg for k, v in sorted(self.envs[i].items()) for arg in ("-e", f"{k}={v}")],
            self.image,
        )  # fmt: skip

    def deciders(self, members: list[int]) -> list[tuple[int, int]]:
        """(ordinal, term) of each member that says it is the decider."""
        statuses = {i: self.status(i) for i in members}
        return [(i, s["term"]) for i, s in statuses.items() if s.get("role") == "decider"]


def test_the_guides_example_2_on_three_containers(
    podman: Podman, image: str, postgres: Postgres
) -> None:
    """Example 2 step by step: the guide's postgres-secret (its password required by the
    server), its ConfigMap, three replicas of the Deployment; then its Step 4 checks (health,
    metrics, logs, the API) against them, its Troubleshooting's CREATE INDEX statements in psql,
    and a replica's pod deleted and replaced as the Deployment would."""
    postgres.require_password(GUIDE_POSTGRES_SECRET["POSTGRES_PASSWORD"])
    with Deployment(podman, image, postgres) as pods:
        pods.wait("all three ready", lambda: pods.ready(ALL))
        (decider, term), *more = pods.wait("a decider", lambda: pods.deciders(ALL))
        assert not more, "two deciders"
        for i in ALL:  # `wget -O- http://localhost:8080/health` inside each pod
            url = f"http://localhost:{pods.ports[i][0]}/health"
            health = podman("exec", pods.names[i], "sh", "-c", f"wget -O- {url}")
            assert json.loads(health.stdout)["status"] == "healthy"
        check_df_data(podman("exec", pods.names[0], "sh", "-c", "df -h /data").stdout)
        sessions = postgres.psql("SELECT application_name FROM pg_stat_activity")
        for env in pods.envs:  # each pod's sessions are named after it
            assert f"mesh-registry {env['POD_NAME']} " in sessions, sessions
        body = {"id": "example-2-agent", "capabilities": ["weather"], "endpoint": "http://w:8080"}
        code, _ = pods.request(0, "/api/v1/agents", "POST", body, pods.token)
        assert code == 200
        for i in ALL:  # written through one replica, read from each
            code, got = pods.request(i, "/api/v1/agents/example-2-agent?consistency=linearizable")
            assert code == 200 and [c["name"] for c in got["capabilities"]] == ["weather"], got
        code, metrics = pods.request(1, "/metrics:9090")
        assert code == 200 and 'mcp_registry_agents_total{status="healthy"} 1.0' in metrics
        logs = podman("logs", pods.names[decider])  # `kubectl logs deploy/...`
        assert "deciding health and sweeps" in logs.stdout + logs.stderr
        # The Troubleshooting section's indexes, on the table the decider keeps current.
        pods.wait("the agents table", lambda: postgres.psql("SELECT name FROM agents") != "")
        postgres.psql("CREATE INDEX idx_agents_capability ON agents(capability)")
        postgres.psql("CREATE INDEX idx_agents_last_seen ON agents(last_seen)")
        assert postgres.psql("SELECT capability FROM agents") == "{weather}"
        # The decider's pod is deleted: another replica takes over with a higher term, and the
        # replacement pod replays the log from the database (it has no volume).
        podman("kill", pods.names[decider])
        others = [i for i in ALL if i != decider]
        (successor, new_term), *more = pods.wait("a new decider", lambda: pods.deciders(others))
        assert not more and new_term > term
        body = {"id": "after-failover", "capabilities": ["maps"], "endpoint": "http://m:8080"}
        assert pods.request(successor, "/api/v1/agents", "POST", body, pods.token)[0] == 200
        podman("rm", "--force", pods.names[decider])
        pods.start(decider)
        pods.wait("the replaced pod ready", lambda: pods.ready([decider]))
        code, listed = pods.request(decider, "/api/v1/agents")
        assert code == 200 and {a["id"] for a in listed["agents"]} == {
            "example-2-agent",
            "after-failover",
        }
        # A pod given a wrong password is not ready and says why; it does not crash-loop.
        pods.envs[decider]["DATABASE_PASSWORD"] = "wrong"
        podman("rm", "--force", pods.names[decider])
        pods.start(decider)
        pods.wait("the reason", lambda: "password" in str(pods.request(decider, "/ready")[1]))
        assert pods.request(decider, "/health")[0] == 200
