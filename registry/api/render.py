"""How agents and capabilities look on the wire (the Go registry's AgentInfo shapes).

One renderer serves ``GET /agents``, ``GET /api/v1/agents`` and the SQLite-free inspection
paths, so the two API families can never disagree about an agent.
"""

from __future__ import annotations

from typing import Any

from registry import llm
from registry.health import Liveness
from registry.registration import endpoint
from registry.resolve import AVAILABLE, Provider
from registry.timefmt import iso_ms
from registry.view import HEALTHY, Agent, View


def capability_info(tool: dict[str, Any], agent: Agent, unmet: str) -> dict[str, Any]:
    """CapabilityInfo; ``available`` as the Go registry derives it: the agent healthy and the
    tool's ``required`` dependencies met (``unmet`` says which is not, registry.availability),
    with ``unavailable_reason`` saying why not."""
    reason = "agent unhealthy" if agent.status != HEALTHY else unmet
    info: dict[str, Any] = {
        "name": tool["capability"],
        "version": tool.get("version", ""),
        "function_name": tool["function_name"],
        "tags": tool.get("tags", []),
        "description": tool.get("description", ""),
        "available": not reason,
    }
    if reason:
        info["unavailable_reason"] = reason
    kwargs = tool.get("kwargs") or {}
    if kwargs.get("task") is True:
        info["task"] = True
    return info


def agent_info(view: View, agent: Agent, liveness: Liveness) -> dict[str, Any]:
    """AgentInfo: what ``meshctl list`` renders (status, DEPS, CAPS, endpoint, age, last seen)."""
    return {**agent_info_from_log(view, agent), "last_seen": iso_ms(last_seen_ms(agent, liveness))}


def last_seen_ms(agent: Agent, liveness: Liveness) -> int:
    """The newest of a heartbeat seen by this node and the agent's last registration."""
    return max(liveness.last_seen_ms(agent.agent_id) or 0, agent.updated_ms)


def agent_info_from_log(view: View, agent: Agent) -> dict[str, Any]:
    """AgentInfo without ``last_seen``: everything that changes only when the log does."""
    reg = agent.registration
    agent_id = agent.agent_id
    resolutions: list[dict[str, Any]] = []
    resolution = view.resolution(agent_id)
    for function_name, deps in view.dependencies(agent_id):
        for dep, item in zip(deps, resolution.get(function_name, ()), strict=False):
            info: dict[str, Any] = {
                "function_name": function_name,
                "capability": dep.capability,
                "tags": list(dep.required_tags),
                "status": item["status"],
            }
            if item["status"] == AVAILABLE:
                info["provider_agent_id"] = item["agent_id"]
                info["mcp_tool"] = item["function_name"]
                info["endpoint"] = item["endpoint"]
            resolutions.append(info)
    llm_tools, llm_providers = llm.resolutions(reg, view.llm_answer(agent_id))
    return {
        "id": agent_id,
        "name": reg.get("name", agent_id),
        "agent_type": reg.get("agent_type", "mcp_agent"),
        "runtime": reg.get("runtime", "python"),
        "version": reg.get("version", ""),
        "namespace": reg.get("namespace", "default"),
        "description": reg.get("description", ""),
        "a2a_producer": bool(reg.get("a2a_producer", False)),
        "a2a_consumer": bool(reg.get("a2a_consumer", False)),
        "status": agent.status,
        "endpoint": endpoint(reg),
        "capabilities": [
            capability_info(tool, agent, unmet)
            for tool, unmet in zip(reg.get("tools") or (), view.availability(agent_id), strict=True)
        ],
        "total_dependencies": len(resolutions),
        "dependencies_resolved": sum(1 for r in resolutions if r["status"] == AVAILABLE),
        "dependency_resolutions": resolutions,
        "llm_tool_resolutions": llm_tools,
        "llm_provider_resolutions": llm_providers,
        "created_at": iso_ms(agent.created_ms),
    }


def provider_info(provider: Provider, view: View) -> dict[str, Any]:
    """One provider of a capability in ``GET /api/v1/capabilities``."""
    return {
        "agent_id": provider.agent_id,
        "function_name": provider.function_name,
        "version": provider.version,
        "tags": sorted(provider.tags),
        "namespace": provider.namespace,
        "endpoint": provider.endpoint,
        "status": HEALTHY if view.is_healthy(provider.agent_id) else "unhealthy",
    }
