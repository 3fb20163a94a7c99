"""The agent listings (``GET /agents``, ``GET /api/v1/agents``) as JSON bytes, re-rendered
only where something changed.

A listing renders every agent; with thousands of agents, building their AgentInfo dicts and
serializing them was nearly all of a request's cost, although between two calls almost nothing
changes. So each agent's JSON is kept with what it was rendered from: its registration (a new
object for every upsert, never edited in place), status, timestamps, its resolution (the
view's cached object, replaced whenever a provider it depends on changes) and its last-seen
time. A listing reuses the bytes of every agent whose inputs are unchanged, and re-renders
only the ``last_seen`` tail of an agent that merely heartbeated. The output is byte for byte
what serializing :func:`registry.api.render.agent_info` gives (tests/test_listing.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from registry.api.render import agent_info_from_log, last_seen_ms
from registry.health import Liveness
from registry.timefmt import iso_ms, now_ms
from registry.view import Agent, Resolution, View


@dataclass(slots=True)
class _Rendered:
    registration: dict[str, Any]
    status: str
    created_ms: int
    updated_ms: int
    resolution: Resolution
    head: bytes
    """The agent's JSON object without its closing brace and ``last_seen``."""
    seen_ms: int
    json: bytes

    def matches(self, agent: Agent, resolution: Resolution) -> bool:
        return (
            self.registration is agent.registration
            and self.resolution is resolution
            and self.status == agent.status
            and self.created_ms == agent.created_ms
            and self.updated_ms == agent.updated_ms
        )


class Listings:
    """Per-agent JSON kept between listings of one node's view, and the last whole listing."""

    def __init__(self) -> None:
        self._rendered: dict[str, _Rendered] = {}
        self._everyone: tuple[tuple[int, int], bytes, int] | None = None

    def everyone(self, view: View, liveness: Liveness) -> bytes:
        """Every agent. Reused whole while neither the log nor any last-seen time moved: the
        view changes only by applying entries (each raises ``applied_index``; a snapshot
        install moves it too), last-seen times only through ``liveness`` (its ``version``)."""
        key = (view.applied_index, liveness.version)
        if self._everyone is None or self._everyone[0] != key:
            array = self._array(view, view.agents.values(), liveness)
            self._everyone = (key, array, len(view.agents))
        _, array, count = self._everyone
        return self._wrap(array, count)

    def body(self, view: View, agents: Iterable[Agent], liveness: Liveness) -> bytes:
        """``{"agents": [...], "count": n, "timestamp": ...}`` for ``agents`` (view order)."""
        chosen = list(agents)
        return self._wrap(self._array(view, chosen, liveness), len(chosen))

    def _array(self, view: View, agents: Iterable[Agent], liveness: Liveness) -> bytes:
        parts = [self._agent_json(view, agent, liveness) for agent in agents]
        # Forget agents that have left the view, so the cache never outgrows it.
        if len(self._rendered) > len(view.agents):
            self._rendered = {k: v for k, v in self._rendered.items() if k in view.agents}
        return b"[" + b",".join(parts) + b"]"

    @staticmethod
    def _wrap(array: bytes, count: int) -> bytes:
        tail = orjson.dumps({"count": count, "timestamp": iso_ms(now_ms())})
        return b'{"agents":' + array + b"," + tail[1:]

    def _agent_json(self, view: View, agent: Agent, liveness: Liveness) -> bytes:
        agent_id = agent.agent_id
        resolution = view.resolution(agent_id)
        seen = last_seen_ms(agent, liveness)
        kept = self._rendered.get(agent_id)
        if kept is not None and kept.matches(agent, resolution):
            if kept.seen_ms == seen:
                return kept.json
            head = kept.head
        else:
            head = orjson.dumps(agent_info_from_log(view, agent))[:-1]
        json = head + b',"last_seen":' + orjson.dumps(iso_ms(seen)) + b"}"
        self._rendered[agent_id] = _Rendered(
            agent.registration,
            agent.status,
            agent.created_ms,
            agent.updated_ms,
            resolution,
            head,
            seen,
            json,
        )
        return json
