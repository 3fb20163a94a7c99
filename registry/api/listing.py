"""The agent listings (``GET /agents``, ``GET /api/v1/agents``) as JSON bytes, re-rendered
only where something changed.

A listing renders every agent; with thousands of agents, building their AgentInfo dicts and
serializing them was nearly all of a request's cost, although between two calls almost nothing
changes. So each agent's JSON is kept with what it was rendered from: its registration (a new
object for every upsert, never edited in place), status, timestamps, its resolution and its
LLM answer (the view's cached objects, replaced whenever a provider they depend on changes;
so also when its tools' availability may change, since the ``required`` dependencies deciding
it are among its dependencies) and its last-seen time. A listing reuses the bytes of every
agent whose inputs are unchanged, and re-renders only the ``last_seen`` tail of an agent that
merely heartbeated. The output is byte for byte what serializing
:func:`registry.api.render.agent_info` gives (tests/test_listing.py).

Between two log entries (the steady state: heartbeats append nothing) the inputs other than
``last_seen`` cannot have changed, so an agent's rendering is re-validated only when the
view's applied index has moved since it was last checked. A listing after a round of
heartbeats then costs a dict lookup and one timestamp per agent; that matters because a full
listing runs on the event loop and every request waits behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from registry.api.render import agent_info_from_log, last_seen_ms
from registry.health import Liveness
from registry.llm import Answer
from registry.timefmt import iso_ms, now_ms
from registry.view import Agent, Resolution, View

Select = Callable[[View], list[Agent]]
"""Picks the agents a listing shows from the view as it is when the listing (re)starts."""

RESTARTS = 2
"""Chunked attempts before a listing renders in one go."""


@dataclass(slots=True)
class _Rendered:
    checked_at: int
    """The view's applied index when these inputs were last compared with the agent's."""
    registration: dict[str, Any]
    status: str
    created_ms: int
    updated_ms: int
    resolution: Resolution
    llm_answer: Answer
    head: bytes
    """The agent's JSON object without its closing brace and ``last_seen``."""
    seen_ms: int
    json: bytes

    def matches(self, agent: Agent, resolution: Resolution, llm_answer: Answer) -> bool:
        return (
            self.registration is agent.registration
            and self.resolution is resolution
            and self.llm_answer is llm_answer
            and self.status == agent.status
            and self.created_ms == agent.created_ms
            and self.updated_ms == agent.updated_ms
        )


class Listings:
    """Per-agent JSON kept between listings of one node's view, and the last whole listing.

    A listing is rendered in chunks of ``chunk`` agents with a pass through the event loop
    between them, so a listing of 10,000 agents never holds up the heartbeats queued behind it
    for more than one chunk's worth (a few milliseconds). It is still one consistent state of
    the log: if an entry is applied while a listing is under way, the listing starts over.
    """

    def __init__(self, chunk: int = 500) -> None:
        self._chunk = chunk
        self._rendered: dict[str, _Rendered] = {}
        self._everyone: tuple[tuple[int, int], bytes, int] | None = None

    async def everyone(self, view: View, liveness: Liveness) -> bytes:
        """Every agent. Reused whole while neither the log nor any last-seen time moved: the
        view changes only by applying entries (each raises ``applied_index``; a snapshot
        install moves it too), last-seen times only through ``liveness`` (its ``version``)."""
        if self._everyone is None or self._everyone[0] != (view.applied_index, liveness.version):
            version = liveness.version  # read first: a heartbeat during the render moves it on
            index, parts = await self._render(view, _all_agents, liveness)
            self._everyone = ((index, version), _array(parts), len(parts))
        _, array, count = self._everyone
        return self._wrap(array, count)

    async def body(self, view: View, select: Select, liveness: Liveness) -> bytes:
        """``{"agents": [...], "count": n, "timestamp": ...}`` for the agents ``select`` picks
        from the view, in the order it gives them."""
        _, parts = await self._render(view, select, liveness)
        return self._wrap(_array(parts), len(parts))

    async def _render(
        self, view: View, select: Select, liveness: Liveness
    ) -> tuple[int, list[bytes]]:
        """The selected agents' JSON and the applied index it shows. After ``RESTARTS``
        attempts overtaken by the log, the last one renders without yielding, so a busy log
        cannot starve a listing."""
        # Forget agents that have left the view, so the cache never outgrows it.
        if len(self._rendered) > len(view.agents):
            self._rendered = {k: v for k, v in self._rendered.items() if k in view.agents}
        for _ in range(RESTARTS):
            index = view.applied_index
            parts = await self._attempt(view, select, liveness, index)
            if parts is not None:
                return index, parts
        index = view.applied_index
        return index, [self._agent_json(view, agent, liveness) for agent in select(view)]

    async def _attempt(
        self, view: View, select: Select, liveness: Liveness, index: int
    ) -> list[bytes] | None:
        """One chunked rendering, or None if an entry was applied while it yielded."""
        agents = select(view)
        parts: list[bytes] = []
        for start in range(0, len(agents), self._chunk):
            if start:
                await asyncio.sleep(0)
                if view.applied_index != index:
                    return None
            chunk = agents[start : start + self._chunk]
            parts.extend([self._agent_json(view, agent, liveness) for agent in chunk])
        return parts

    @staticmethod
    def _wrap(array: bytes, count: int) -> bytes:
        tail = orjson.dumps({"count": count, "timestamp": iso_ms(now_ms())})
        return b'{"agents":' + array + b"," + tail[1:]

    def _agent_json(self, view: View, agent: Agent, liveness: Liveness) -> bytes:
        agent_id = agent.agent_id
        seen = last_seen_ms(agent, liveness)
        kept = self._rendered.get(agent_id)
        if kept is not None and kept.checked_at != view.applied_index:
            if kept.matches(agent, view.resolution(agent_id), view.llm_answer(agent_id)):
                kept.checked_at = view.applied_index
            else:
                kept = None
        if kept is not None:
            if kept.seen_ms != seen:
                kept.seen_ms = seen
                kept.json = kept.head + _last_seen(seen)
            return kept.json
        resolution = view.resolution(agent_id)
        llm_answer = view.llm_answer(agent_id)
        head = orjson.dumps(agent_info_from_log(view, agent))[:-1]
        json = head + _last_seen(seen)
        self._rendered[agent_id] = _Rendered(
            view.applied_index,
            agent.registration,
            agent.status,
            agent.created_ms,
            agent.updated_ms,
            resolution,
            llm_answer,
            head,
            seen,
            json,
        )
        return json


def _last_seen(ms: int) -> bytes:
    """The closing ``,"last_seen":"..."}`` of an agent's JSON object."""
    return b',"last_seen":"' + iso_ms(ms).encode() + b'"}'


def _all_agents(view: View) -> list[Agent]:
    return list(view.agents.values())


def _array(parts: list[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"
