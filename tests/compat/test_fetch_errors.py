"""registry_unreachable: only a registry that cannot be reached turns a failed fetch into a skip.

The samples are pip 26, pip 23 and npm 11 output recorded on this machine; the real runs check
that the installed pip and npm still word their failures that way (a registry on a closed
loopback port), and that ensure_go_registry calls only that "unavailable", all else an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks import go_registry
from tests.compat.fetch_errors import registry_unreachable
from tests.ports import free_port

RETRY = (
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) "
    "after connection broken by '{error}': /simple/mcp-mesh/\n"
)
NOT_FOUND = (
    "ERROR: Could not find a version that satisfies the requirement mcp-mesh==3.8.* "
    "(from versions: {versions})\nERROR: No matching distribution found for mcp-mesh==3.8.*\n"
)
REFUSED = (
    "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new "
    'connection: [Errno 111] Connection refused")'
)
UNRESOLVED = (
    "NameResolutionError(\"HTTPSConnection(host='no-such-host.invalid', port=443): Failed to "
    "resolve 'no-such-host.invalid' ([Errno -2] Name or service not known)\")"
)
READ_TIMEOUT = (
    "ReadTimeoutError(\"HTTPConnectionPool(host='127.0.0.1', port=47771): Read timed out. "
    '(read timeout=2.0)")'
)

# id: (output, the cause it must be classified as)
NETWORK = {
    "pip, connection refused": (
        RETRY.format(error=REFUSED) + NOT_FOUND.format(versions="none"),
        "connection refused",
    ),
    "pip 23 (the SDK's venv), connection refused": (
        RETRY.format(
            error="NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at "
            "0x7f7e0b03bd10>: Failed to establish a new connection: [Errno 111] Connection "
            "refused')"
        )
        + NOT_FOUND.format(versions="none"),
        "connection refused",
    ),
    "pip, name resolution": (
        RETRY.format(error=UNRESOLVED) + NOT_FOUND.format(versions="none"),
        "name resolution failed",
    ),
    "pip, read timeout": (
        RETRY.format(error=READ_TIMEOUT) + NOT_FOUND.format(versions="none"),
        "timed out",
    ),
    "npm, connection refused": (
        "npm error code ECONNREFUSED\nnpm error syscall connect\nnpm error FetchError: request "
        "to http://127.0.0.1:1/@mcpmesh%2fcli-linux-x64 failed, reason: connect ECONNREFUSED "
        "127.0.0.1:1\n",
        "connection refused",
    ),
    "npm, name resolution": (
        "npm error code ENOTFOUND\nnpm error network request to https://no-such-host.invalid/"
        "@mcpmesh%2fcli-linux-x64 failed, reason: getaddrinfo ENOTFOUND no-such-host.invalid\n",
        "name resolution failed",
    ),
    "npm, timeout": (
        "npm error code FETCH_ERROR\nnpm error errno FETCH_ERROR\n"
        "npm error network timeout at: http://127.0.0.1:47772/@mcpmesh%2fcli-linux-x64\n",
        "timed out",
    ),
    "pip, network unreachable": (
        "ERROR: Could not install packages due to an OSError: HTTPSConnectionPool(host='files."
        "pythonhosted.org', port=443): Max retries exceeded with url: /packages/mcp_mesh.whl "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 101] "
        "Network is unreachable'))\n",
        "network unreachable",
    ),
}
REAL_FAILURES = {
    # The loose match this replaces skipped on this one: the index answered, nothing matched.
    "pip, no matching version": NOT_FOUND.format(versions="3.6.0, 3.7.0"),
    "pip, retried, then no matching version": (
        RETRY.format(error=REFUSED) + NOT_FOUND.format(versions="3.7.0")
    ),
    "pip, nothing found offline": NOT_FOUND.format(versions="none"),
    "pip, dependency conflict": (
        "ERROR: Cannot install mcp-mesh==3.8.0 because these package versions have conflicting "
        "dependencies.\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io/\n"
    ),
    "pip, sdist does not build": (
        "error: subprocess-exited-with-error\n  Getting requirements to build wheel did not run "
        "successfully.\nERROR: Failed to build 'pysyncobj' when getting requirements\n"
    ),
    "pip, a connection string in a build log": (
        "  connection pool warm-up skipped\nERROR: Failed building wheel for mcp-mesh\n"
    ),
    "npm, no matching version": (
        "npm error code ETARGET\nnpm error notarget No matching version found for "
        "@mcpmesh/cli-linux-x64@99.0.\n"
    ),
    "npm, tarball corrupt": "npm error code EINTEGRITY\nnpm error sha512-... integrity checksum\n",
}


@pytest.mark.parametrize(("output", "cause"), NETWORK.values(), ids=NETWORK.keys())
def test_an_unreachable_registry_is_named_with_its_cause(output: str, cause: str) -> None:
    reason = registry_unreachable(output)
    assert reason is not None
    named, line = reason.split(": ", 1)
    assert named == cause
    assert line in output


@pytest.mark.parametrize("output", REAL_FAILURES.values(), ids=REAL_FAILURES.keys())
def test_every_other_failure_is_a_failure(output: str) -> None:
    assert registry_unreachable(output) is None


def isolated_pip(*args: str) -> subprocess.CompletedProcess[str]:
    """``pip download`` with no configuration (this machine's pip.conf adds local indexes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_real_pip_output(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/simple"
    links = tmp_path / "links"
    links.mkdir()
    common = ["--dest", str(tmp_path / "dl"), "--retries", "1", "--index-url", closed]
    refused = isolated_pip(*common, "mcp-mesh==3.8.*")
    assert refused.returncode != 0
    reason = registry_unreachable(refused.stderr)
    assert reason is not None and reason.startswith("connection refused: "), refused.stderr
    # Another source answered with a version that does not match: a real failure, though the
    # index's connection was refused as well.
    zipfile.ZipFile(links / "mcp_mesh-3.7.0-py3-none-any.whl", "w").close()
    found_other = isolated_pip(*common, "--find-links", str(links), "mcp-mesh==3.8.*")
    assert "(from versions: 3.7.0)" in found_other.stderr, found_other.stderr
    assert registry_unreachable(found_other.stderr) is None


needs_npm = pytest.mark.skipif(
    shutil.which("npm") is None, reason="npm is not installed (.ci/run installs nodejs and npm)"
)


@pytest.fixture
def npm_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ensure_go_registry with an empty cache of its own and npm retrying nothing."""
    binaries = tmp_path / ".npm-compat" / "package" / "bin"
    monkeypatch.setattr(go_registry, "BINARIES", binaries)
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    return binaries


@pytest.fixture
def npm_registry_answering_404() -> Iterator[str]:
    """A package registry that is up and has no such package."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: npm's own error is what the test reads."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@needs_npm
def test_npm_registry_refusing_is_unavailable(
    npm_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{free_port()}/")
    binaries, why_not = go_registry.ensure_go_registry()
    assert binaries is None
    assert why_not.startswith("npm registry unreachable (connection refused: "), why_not


@needs_npm
def test_npm_registry_answering_is_an_error(
    npm_cache: Path, npm_registry_answering_404: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("npm_config_registry", npm_registry_answering_404)
    with pytest.raises(RuntimeError, match="npm error code E404"):
        go_registry.ensure_go_registry()


def test_no_npm_is_unavailable(
    npm_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # exists, holds no npm
    assert go_registry.ensure_go_registry() == (
        None,
        "npm is not installed: cannot fetch meshctl and the Go registry",
    )


def test_a_fetched_package_that_does_not_run_is_an_error(npm_cache: Path) -> None:
    npm_cache.mkdir(parents=True)
    (npm_cache / "mcp-mesh-registry").write_text("#!/bin/sh\necho MCP Mesh Registry v3.6.0\n")
    (npm_cache / "meshctl").write_bytes(b"\x7fELF truncated")
    for binary in npm_cache.iterdir():
        binary.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"mcp-mesh-registry --version .* exited 0"):
        go_registry.ensure_go_registry()  # the wrong version
    (npm_cache / "mcp-mesh-registry").write_text("#!/bin/sh\necho MCP Mesh Registry v3.7.1\n")
    with pytest.raises(RuntimeError, match=r"meshctl from .* does not run"):
        go_registry.ensure_go_registry()  # not an executable
