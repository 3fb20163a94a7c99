"""Checking and normalizing what agents send, before anything reaches the log.

Two bodies register an agent: the SDK's ``POST /heartbeat`` (MeshAgentRegistration in the Go
registry's OpenAPI spec) and the deployment guide's ``POST /api/v1/agents``
(``{"id", "capabilities", "endpoint"}``). Both become one normalized registration dict, so
the two populations are one. JSON Schema validation uses ``fastjsonschema`` (compiled
validators, precise error paths) instead of hand-written type checks.

Normalization fills the Go registry's defaults and keeps unknown fields (forward
compatibility). Fields that change on every heartbeat without meaning a registration change
(``timestamp``) are dropped, so an unchanged heartbeat compares equal and appends nothing.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema

AGENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
VOLATILE_FIELDS = ("timestamp",)
"""Heartbeat fields that are not part of the registration (they change every time)."""

_STRING = {"type": "string"}
_TAGS = {"type": "array", "items": _STRING}
# Schemas (canonical forms and hashes): only the types the Go registry's decoder insists on;
# what a schema holds is read leniently (registry.schemas).
_OPTIONAL_STRING = {"type": ["string", "null"]}
_OPTIONAL_OBJECT = {"type": ["object", "null"]}
_OPTIONAL_STRINGS = {"type": ["array", "null"], "items": _STRING}
_DEPENDENCY = {
    "type": "object",
    "required": ["capability"],
    "properties": {
        "capability": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"anyOf": [_STRING, _TAGS]}},
        "version": _STRING,
        "namespace": _STRING,
        "expectedSchemaHash": _OPTIONAL_STRING,
        "expectedSchemaCanonical": _OPTIONAL_OBJECT,
        "matchMode": _OPTIONAL_STRING,
        "required": {"type": ["boolean", "null"]},
    },
}
# @mesh.llm declarations: only the types the Go registry's decoder insists on. What is inside
# an llm_filter it reads leniently, and so do we (registry.llm).
_LLM_FILTER = {"type": ["object", "null"]}
_LLM_PROVIDER = {
    "type": ["object", "null"],
    "properties": {
        "capability": _OPTIONAL_STRING,
        "tags": {"type": ["array", "null"], "items": _STRING},
        "version": _OPTIONAL_STRING,
        "namespace": _OPTIONAL_STRING,
    },
}
_TOOL = {
    "type": "object",
    "required": ["function_name", "capability"],
    "properties": {
        "function_name": {"type": "string", "minLength": 1},
        "capability": {"type": "string", "minLength": 1},
        "version": _STRING,
        "tags": _TAGS,
        "description": _STRING,
        "dependencies": {"type": "array", "items": _DEPENDENCY},
        "kwargs": {"type": ["object", "null"]},
        "llm_filter": _LLM_FILTER,
        "llm_provider": _LLM_PROVIDER,
        "outputSchema": _OPTIONAL_OBJECT,
        "inputSchemaCanonical": _OPTIONAL_OBJECT,
        "inputSchemaHash": _OPTIONAL_STRING,
        "outputSchemaCanonical": _OPTIONAL_OBJECT,
        "outputSchemaHash": _OPTIONAL_STRING,
        "schemaWarnings": _OPTIONAL_STRINGS,
    },
}
_SURFACE = {
    "type": "object",
    "properties": {
        "path": _OPTIONAL_STRING,
        "skill_id": _OPTIONAL_STRING,
        "name": _OPTIONAL_STRING,
        "description": _OPTIONAL_STRING,
        "input_modes": _OPTIONAL_STRINGS,
        "output_modes": _OPTIONAL_STRINGS,
        "tags": _OPTIONAL_STRINGS,
    },
}
_OPTIONAL_BOOLEAN = {"type": ["boolean", "null"]}
AGENT_TYPES = ("mcp_agent", "mesh_tool", "decorator_agent", "api", "a2a")
RUNTIMES = ("python", "typescript", "java")
"""The values the Go registry's database accepts (its Ent enums). Anything else it refuses
too, though with a 200 and ``status: error``; empty means the default here."""
_AGENT_ID = {"type": "string", "pattern": AGENT_ID_PATTERN}
MESH_REGISTRATION = {
    "type": "object",
    "required": ["agent_id"],
    "properties": {
        "agent_id": _AGENT_ID,
        "name": {"type": "string", "maxLength": 256},
        "agent_type": {"enum": [*AGENT_TYPES, ""]},
        "runtime": {"enum": [*RUNTIMES, ""]},
        "version": _STRING,
        "description": _STRING,
        "http_host": _STRING,
        "http_port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "namespace": {"type": "string", "maxLength": 256},
        "tools": {"type": "array", "items": _TOOL},
        "surfaces": {"type": ["array", "null"], "items": _SURFACE},
        "a2a_producer": _OPTIONAL_BOOLEAN,
        "a2a_consumer": _OPTIONAL_BOOLEAN,
    },
}
GUIDE_REGISTRATION = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": _AGENT_ID,
        "name": _STRING,
        "capabilities": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "endpoint": _STRING,
        "namespace": _STRING,
        "version": _STRING,
        "tags": _TAGS,
    },
}

_validate_mesh = fastjsonschema.compile(MESH_REGISTRATION)
_validate_guide = fastjsonschema.compile(GUIDE_REGISTRATION)
_validate_agent_id = fastjsonschema.compile(_AGENT_ID)


class InvalidRegistration(ValueError):
    """Bad input; ``str()`` is the message and ``field`` the JSON path that is wrong."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def _check(validator: Any, body: Any) -> None:
    try:
        validator(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = ".".join(str(p) for p in exc.path[1:])
        raise InvalidRegistration(exc.message.replace("data.", "", 1), path) from None


def valid_agent_id(agent_id: str) -> bool:
    try:
        _validate_agent_id(agent_id)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _normalize_dependency(dep: dict[str, Any]) -> dict[str, Any]:
    out = dict(dep)
    out.setdefault("tags", [])
    out.setdefault("version", "")
    out.setdefault("namespace", "")
    return out


def _normalize_tool(tool: dict[str, Any]) -> dict[str, Any]:
    out = dict(tool)
    out["version"] = tool.get("version") or "1.0.0"
    out["tags"] = list(tool.get("tags") or [])
    out["dependencies"] = [_normalize_dependency(d) for d in tool.get("dependencies") or []]
    return out


def from_heartbeat(body: Any) -> dict[str, Any]:
    """The normalized registration in a ``POST /heartbeat`` body; InvalidRegistration if bad."""
    _check(_validate_mesh, body)
    agent = {k: v for k, v in body.items() if k not in VOLATILE_FIELDS}
    agent_id = agent["agent_id"]
    agent["name"] = agent.get("name") or agent_id
    agent["agent_type"] = agent.get("agent_type") or "mcp_agent"
    agent["runtime"] = agent.get("runtime") or "python"
    agent["version"] = agent.get("version") or ""  # the Go registry keeps it empty too
    agent["namespace"] = agent.get("namespace") or "default"
    agent["http_host"] = agent.get("http_host") or "0.0.0.0"
    agent["http_port"] = int(agent.get("http_port") or 0)
    agent["tools"] = [_normalize_tool(t) for t in agent.get("tools") or []]
    return agent


def from_guide(body: Any) -> dict[str, Any]:
    """The normalized registration in a guide-style ``POST /api/v1/agents`` body."""
    _check(_validate_guide, body)
    agent_id = body["id"]
    extra = {
        k: v
        for k, v in body.items()
        if k not in ("id", "capabilities", "name", "namespace", "version", "tags")
    }
    tags = list(body.get("tags") or [])
    version = body.get("version") or "1.0.0"
    agent: dict[str, Any] = {
        **extra,
        "agent_id": agent_id,
        "name": body.get("name") or agent_id,
        "agent_type": "mcp_agent",
        "runtime": "python",
        "version": version,
        "namespace": body.get("namespace") or "default",
        "http_host": "",
        "http_port": 0,
        "endpoint": body.get("endpoint") or "",
        "tools": [
            _normalize_tool(
                {"function_name": cap, "capability": cap, "version": version, "tags": tags}
            )
            for cap in dict.fromkeys(body.get("capabilities") or [])
        ],
    }
    return agent


def endpoint(agent: dict[str, Any]) -> str:
    """Where an agent is reached: its explicit endpoint (guide API), else ``http://host:port``
    (``https://`` for one registered with a client certificate: it serves TLS too), else
    ``stdio://<id>`` for an agent without an HTTP port (as the Go registry reports it)."""
    explicit = agent.get("endpoint")
    if isinstance(explicit, str) and explicit:
        return explicit
    host, port = agent.get("http_host"), agent.get("http_port")
    if host and port:
        return f"{scheme(agent)}://{host}:{port}"
    return f"stdio://{agent.get('agent_id', '')}"


def scheme(agent: dict[str, Any]) -> str:
    """``https`` for an agent registered with a client certificate (it serves TLS on its port
    with it, as the SDK does), else ``http``: how the listing and the proxy reach it."""
    return "https" if agent.get("entity_id") else "http"


def tool_endpoint(agent: dict[str, Any]) -> str:
    """Where an LLM reaches an agent's tools, as the Go registry writes it in ``llm_tools`` and
    ``llm_providers``: unlike :func:`endpoint`, a wildcard or missing host becomes ``localhost``
    (an LLM agent cannot dial 0.0.0.0), a scheme given with the host is dropped, and no port
    means ``stdio://<id>``."""
    port = agent.get("http_port")
    if not port:
        return f"stdio://{agent.get('agent_id', '')}"
    host = str(agent.get("http_host") or "")
    if host in ("", "0.0.0.0"):
        host = "localhost"
    for scheme in ("http://", "https://"):
        host = host.removeprefix(scheme)
    return f"http://{host}:{port}"
