"""A2A surfaces: where external A2A clients find the agents that expose them.

An agent of ``agent_type: "a2a"`` sends ``surfaces`` (one ``{path, skill_id, ...}`` per
``@mesh.a2a``) with its registration. As in the Go registry (ent_handlers_a2a.go):

- a registration without ``surfaces`` (or with ``null``) keeps the ones stored before; ``[]``
  clears them (decided when the heartbeat is received, before the event enters the log, by
  :func:`keep_surfaces`);
- ``GET /a2a/agents`` lists the surfaces of every registered ``a2a`` agent, agents in the
  mesh's order, each agent's surfaces in declaration order; any agent's heartbeat answer carries
  its own as ``surfaces``;
- a surface without a path or a skill id is not shown; a shown one is ``{path, skill_id}`` plus,
  when MCP_MESH_PUBLIC_URL_PREFIX is set, ``public_url`` (prefix + path, with a ``/`` between)
  and ``agent_card_url`` (``public_url`` + ``/.well-known/agent.json``).

Pure functions of registrations and the prefix, so every replica answers alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

A2A = "a2a"
CARD = "/.well-known/agent.json"

Surface = dict[str, Any]


def keep_surfaces(new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """``new`` with the surfaces of ``stored`` (the registration held so far) when it sends none."""
    if new.get("surfaces") is not None or stored is None or stored.get("surfaces") is None:
        return new
    return {**new, "surfaces": stored["surfaces"]}


def shown(registration: dict[str, Any], prefix: str) -> list[Surface]:
    """The agent's surfaces as answers show them."""
    out = []
    for surface in registration.get("surfaces") or ():
        path, skill_id = surface.get("path") or "", surface.get("skill_id") or ""
        if not path or not skill_id:
            continue
        item: Surface = {"path": path, "skill_id": skill_id}
        if prefix:
            public_url = prefix + (path if path.startswith("/") else f"/{path}")
            item = {"agent_card_url": public_url + CARD, **item, "public_url": public_url}
        out.append(item)
    return out


def listing(registrations: Iterable[dict[str, Any]], prefix: str) -> list[Surface]:
    """``GET /a2a/agents``'s ``surfaces``: those of every ``a2a`` agent, in the given order."""
    return [
        surface
        for registration in registrations
        if registration.get("agent_type") == A2A
        for surface in shown(registration, prefix)
    ]
