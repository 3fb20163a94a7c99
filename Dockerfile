# The registry pod's image: `docker build -t mcp-mesh/registry:dev .` (the guide's
# `docker build ... ./cmd/registry` maps to the repository root here; see k8s/README.md).
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module; the default is the official
# slim image. Machines without a container registry build from a local base, e.g.
#   podman build --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t mcp-mesh/registry:dev .
# The builder and the final stage use the same base, so the venv's interpreter links stay valid.
ARG BASE_IMAGE=python:3.12-slim

# ---- builder: wheels for the registry and its dependencies, installed into /opt/venv ----
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY replication ./replication
# Every dependency ships binary wheels or is pure Python (pysyncobj is an sdist, hence a current
# pip and wheel): no compiler is needed here either.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install "pip>=24" "wheel>=0.43" \
    && /opt/venv/bin/pip wheel --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-index --find-links /wheels mcp-mesh-registry \
    && /opt/venv/bin/pip uninstall --yes pip wheel \
    && /opt/venv/bin/python -m compileall -q /opt/venv \
    && /opt/venv/bin/mcp-mesh-registry --version

# ---- final: the venv, the guide's debugging tools and an unprivileged user; nothing else ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="mcp-mesh-registry" \
      org.opencontainers.image.description="Highly available MCP Mesh registry (LMDB event log with Raft, or PostgreSQL)" \
      org.opencontainers.image.licenses="MIT"
# The guide's "Debug Registry Issues" commands inside the pod: sqlite3 for
# `sqlite3 /data/registry.db "SELECT * FROM agents;"` (DATABASE_TYPE=sqlite), wget for
# `wget -O- http://localhost:8080/health`; `df -h /data` is coreutils (in every Debian base).
# Versions are not pinned: they follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends sqlite3 wget \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && groupadd --system --gid 10001 registry \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin registry \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_PATH=/data/registry.db
# Numeric, so Kubernetes can check runAsNonRoot without resolving a name.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 8080 HTTP API (and /metrics), 9090 metrics, 4321 Raft peers
EXPOSE 8080 9090 4321
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('REGISTRY_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["mcp-mesh-registry"]
CMD ["serve"]
