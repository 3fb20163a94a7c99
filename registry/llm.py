"""What ``@mesh.llm`` functions are told: the tools their LLM may call and the provider they use.

A tool that carries ``llm_filter`` gets ``llm_tools[function_name]``; one that carries
``llm_provider`` gets ``llm_providers[function_name]``. Both are pure functions of the view (no
I/O, no clock), so every replica answers alike, and the view caches them as it caches
dependency resolution: until a provider of a capability they look at changes.

Tool lists follow the Go registry (llm_filtering.go), because SDKs hand them to an LLM as they
come:

- only tools with an ``inputSchema`` of healthy agents are offered, in the mesh's order
  (agents in the order they registered, each agent's tools in declaration order);
- each filter item is a capability name, ``"*"`` (every capability) or
  ``{capability, tags, version}``, matched like a dependency (tag operators and semver
  constraints of :mod:`registry.resolve`, strings only in ``tags``); an item naming tags ranks
  its matches by tag score, highest first, keeping the mesh's order among equals;
- ``filter_mode`` ``"all"`` (the default, also for unknown modes): every item's matches, item by
  item; ``"best_match"``: of those, one tool per capability, the highest semver version, on a
  tie (or an unparsable version) the one with more tags, else the first; ``"*"``: every tool of
  every other agent, the filter ignored;
- a function name appears once (LLM APIs need unique tool names): the first occurrence wins;
- the agent's own tools count, except in ``"*"`` mode.

The provider is a dependency like any other: :func:`registry.resolve.choose` picks it among the
capability's tools that have an ``inputSchema``, within the spec's namespace (else the agent's).

:func:`resolutions` tells the same answer item by item for AgentInfo (``GET /agents``), as the
Go registry records it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from registry.registration import tool_endpoint
from registry.resolve import (
    AVAILABLE,
    UNRESOLVED,
    Dependency,
    Provider,
    choose,
    compare_semver,
    tag_score,
    version_matches,
)

if TYPE_CHECKING:
    from registry.view import View

ALL = "all"
BEST_MATCH = "best_match"
WILDCARD = "*"

ToolList = dict[str, Any]
"""One ``llm_tools`` item: ``{capability, description, endpoint, inputSchema, name, tags,
version}`` (the Go registry's LLMToolInfo as it sends it: no agent id, no kwargs)."""


@dataclass(frozen=True, slots=True)
class ToolQuery:
    """One item of an ``llm_filter``'s ``filter`` list."""

    wanted: Dependency
    """Capability, tags and version constraint, matched as a dependency's are (no namespace:
    tool filters see the whole mesh, as in the Go registry)."""
    any_capability: bool
    ranked: bool
    """Whether the item names tags: then matches are ordered by tag score."""

    @classmethod
    def parse(cls, item: str | dict[str, Any]) -> ToolQuery:
        """Read as the Go registry reads it: a key of the wrong type constrains nothing."""
        if isinstance(item, str):
            return cls(Dependency(item, "", "", (), ()), item == WILDCARD, False)
        capability, tags, version = item.get("capability"), item.get("tags"), item.get("version")
        strings = tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
        wanted = Dependency(
            capability if isinstance(capability, str) else "",
            "",
            version if isinstance(version, str) else "",
            strings,
            (),
        )
        return cls(wanted, not isinstance(capability, str), bool(strings))

    def select(self, offered: list[_Offer]) -> list[_Offer]:
        """The offered tools this item matches, best tag score first when it names tags."""
        scored: list[tuple[int, _Offer]] = []
        for offer in offered:
            if not self.any_capability and offer.tool["capability"] != self.wanted.capability:
                continue
            if not version_matches(offer.tool["version"], self.wanted.version):
                continue
            score = tag_score(frozenset(offer.tool["tags"]), self.wanted) if self.ranked else 0
            if score is not None:
                scored.append((score, offer))
        if self.ranked:
            scored.sort(key=lambda pair: -pair[0])  # stable: the mesh's order among equals
        return [offer for _, offer in scored]


@dataclass(frozen=True, slots=True)
class LlmFunction:
    """One tool's ``llm_filter`` and ``llm_provider``, parsed (either may be absent)."""

    function_name: str
    mode: str | None
    """``filter_mode``, or None when the tool has no ``llm_filter``."""
    queries: tuple[ToolQuery, ...]
    provider: Dependency | None

    @classmethod
    def parse(cls, tool: dict[str, Any], namespace: str) -> LlmFunction | None:
        """The tool's LLM declarations, None without any usable one.

        As tolerant as the Go registry, which ignores what it cannot use rather than rejecting
        the registration; that also keeps :func:`registry.view.apply` safe on registrations
        logged before these fields were looked at.
        """
        mode, queries = _parse_filter(tool.get("llm_filter"))
        provider = _parse_provider(tool.get("llm_provider"), namespace)
        if mode is None and provider is None:
            return None
        return cls(tool["function_name"], mode, queries, provider)

    def capabilities(self) -> frozenset[str] | None:
        """The capabilities whose providers decide this function's answer; None for all."""
        if self.mode == WILDCARD or any(q.any_capability for q in self.queries):
            return None
        names = {q.wanted.capability for q in self.queries}
        if self.provider is not None:
            names.add(self.provider.capability)
        return frozenset(names)


def _parse_filter(llm_filter: Any) -> tuple[str | None, tuple[ToolQuery, ...]]:
    """``(filter_mode, items)``; no mode (no tool list at all) without a ``filter`` list, or
    when an item is neither a name nor an object and the mode needs the items."""
    if not isinstance(llm_filter, dict) or not isinstance(llm_filter.get("filter"), list):
        return None, ()
    mode = llm_filter.get("filter_mode")
    mode = mode if isinstance(mode, str) and mode else ALL
    if mode == WILDCARD:
        return mode, ()
    items = llm_filter["filter"]
    if not all(isinstance(item, str | dict) for item in items):
        return None, ()
    return mode, tuple(ToolQuery.parse(item) for item in items)


def _parse_provider(spec: Any, namespace: str) -> Dependency | None:
    """The provider wanted, as a dependency (only string tags: the Go registry's type); None
    without a capability."""
    if not isinstance(spec, dict):
        return None
    capability, tags = spec.get("capability"), spec.get("tags")
    if not isinstance(capability, str) or not capability:
        return None
    version, wanted_namespace = spec.get("version"), spec.get("namespace")
    return Dependency(
        capability,
        wanted_namespace if isinstance(wanted_namespace, str) and wanted_namespace else namespace,
        version if isinstance(version, str) else "",
        tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        (),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """An agent's ``llm_tools`` and ``llm_providers``, and what they depend on."""

    tools: dict[str, list[ToolList]]
    providers: dict[str, dict[str, Any]]
    sources: dict[str, tuple[str, ...]]
    """The agent offering each item of ``tools`` (items carry no agent id), for AgentInfo's
    ``llm_tool_resolutions``."""
    capabilities: frozenset[str] | None
    """Capabilities whose changes can change this answer; None: any change can."""
    digest: str
    """Stands for the answer in the view's record of what the agent was sent (a tool list with
    every schema of the mesh is too big to keep per agent); empty for an agent without any
    LLM function."""


NOTHING = Answer({}, {}, {}, frozenset(), "")


@dataclass(frozen=True, slots=True)
class _Offer:
    """A tool an LLM could be given: a healthy agent's tool that has an input schema."""

    agent_id: str
    tool: dict[str, Any]
    registration: dict[str, Any]


def answer(view: View, registration: dict[str, Any]) -> Answer:
    """What the agent registered as ``registration`` gets for its LLM functions now."""
    namespace = registration.get("namespace") or "default"
    functions = [
        function
        for tool in registration.get("tools") or ()
        if (function := LlmFunction.parse(tool, namespace)) is not None
    ]
    if not functions:
        return NOTHING
    agent_id = registration["agent_id"]
    tools: dict[str, list[ToolList]] = {}
    sources: dict[str, tuple[str, ...]] = {}
    providers: dict[str, dict[str, Any]] = {}
    offered: list[_Offer] | None = None
    depends: set[str] | None = set()
    for function in functions:
        if function.mode is not None:
            if offered is None:
                offered = _offered(view)
            listed = _tool_list(function, offered, agent_id)
            tools[function.function_name] = [_tool_item(offer) for offer in listed]
            sources[function.function_name] = tuple(offer.agent_id for offer in listed)
        if function.provider is not None:
            candidates = _with_schema(view.providers(function.provider.capability))
            chosen = choose(function.provider, candidates, view.is_healthy, agent_id)
            if chosen is not None:
                providers[function.function_name] = _provider_item(view, chosen)
        needed = function.capabilities()
        depends = None if depends is None or needed is None else depends | needed
    packed = msgpack.packb([tools, providers], use_bin_type=True)
    digest = hashlib.blake2b(packed, digest_size=16).hexdigest()
    capabilities = None if depends is None else frozenset(depends)
    return Answer(tools, providers, sources, capabilities, digest)


def _offered(view: View) -> list[_Offer]:
    return [
        _Offer(agent_id, tool, agent.registration)
        for agent_id, agent in view.agents.items()
        if view.is_healthy(agent_id)
        for tool in agent.registration.get("tools") or ()
        if isinstance(tool.get("inputSchema"), dict)
    ]


def _with_schema(providers: Iterable[Provider]) -> list[Provider]:
    return [p for p in providers if isinstance(p.tool.get("inputSchema"), dict)]


def _tool_list(function: LlmFunction, offered: list[_Offer], agent_id: str) -> list[_Offer]:
    if function.mode == WILDCARD:
        matched = [offer for offer in offered if offer.agent_id != agent_id]
    else:
        matched = [offer for query in function.queries for offer in query.select(offered)]
    unique: dict[str, _Offer] = {}
    for offer in matched:
        unique.setdefault(offer.tool["function_name"], offer)
    if function.mode != BEST_MATCH:
        return list(unique.values())
    best: dict[str, _Offer] = {}
    for offer in unique.values():
        current = best.get(offer.tool["capability"])
        if current is None or _better(offer.tool, current.tool):
            best[offer.tool["capability"]] = offer
    return list(best.values())


def _better(tool: dict[str, Any], than: dict[str, Any]) -> bool:
    """best_match's preference: the higher semver version, else more tags."""
    order = compare_semver(tool["version"], than["version"])
    if order:
        return order > 0
    return len(tool["tags"]) > len(than["tags"])


def _tool_item(offer: _Offer) -> ToolList:
    tool = offer.tool
    description = tool.get("description")
    return {
        "capability": tool["capability"],
        "description": description if isinstance(description, str) else "",
        "endpoint": tool_endpoint(offer.registration),
        "inputSchema": tool["inputSchema"],
        "name": tool["function_name"],
        "tags": tool["tags"],
        "version": tool["version"],
    }


def _provider_item(view: View, provider: Provider) -> dict[str, Any]:
    """One ``llm_providers`` value, in the Go registry's ResolvedLLMProvider shape."""
    item: dict[str, Any] = {
        "agent_id": provider.agent_id,
        "capability": provider.capability,
        "endpoint": tool_endpoint(view.agents[provider.agent_id].registration),
    }
    vendor = provider.kwargs.get("vendor") if provider.kwargs else None
    if provider.kwargs:
        item["kwargs"] = provider.kwargs
    item["name"] = provider.function_name
    item["status"] = AVAILABLE
    if provider.tool["tags"]:
        item["tags"] = provider.tool["tags"]
    item["vendor"] = vendor if isinstance(vendor, str) else "unknown"
    if provider.version:
        item["version"] = provider.version
    return item


def resolutions(
    registration: dict[str, Any], answer: Answer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """AgentInfo's ``llm_tool_resolutions`` and ``llm_provider_resolutions``: ``answer`` (what
    the agent registered as ``registration`` gets now) told item by item, as the Go registry
    records it (ent_service.go, StoreLLMToolResolutions and StoreLLMProviderResolutions).

    A tool resolution per ``filter`` item and tool of the function's list it accounts for:
    those of the item's capability, or every listed tool for an item naming only tags (the
    list already honours tags, versions and the mode); one ``unresolved`` entry when there is
    none. An item with neither a capability nor tags has no entry, and ``filter_mode`` is told
    as declared (``"all"`` when not a string), also when the list itself could not be built.
    A provider resolution per ``llm_provider`` with a capability, ``available`` when it
    resolved. Available entries first, then unresolved ones, each in declaration order; keys
    in the Go registry's (alphabetical) order.
    """
    namespace = registration.get("namespace") or "default"
    tool_resolutions: list[dict[str, Any]] = []
    provider_resolutions: list[dict[str, Any]] = []
    for tool in registration.get("tools") or ():
        function_name = tool["function_name"]
        llm_filter = tool.get("llm_filter")
        if isinstance(llm_filter, dict) and isinstance(llm_filter.get("filter"), list):
            mode = llm_filter.get("filter_mode")
            tool_resolutions.extend(
                _tool_resolutions(
                    function_name,
                    mode if isinstance(mode, str) else ALL,
                    llm_filter["filter"],
                    answer.tools.get(function_name, []),
                    answer.sources.get(function_name, ()),
                )
            )
        wanted = _parse_provider(tool.get("llm_provider"), namespace)
        if wanted is not None:
            provider_resolutions.append(
                _provider_resolution(function_name, wanted, answer.providers.get(function_name))
            )
    # The Go registry's order: SQLite reads an agent's rows through its (consumer_agent_id,
    # status) index, so available ones come first, each group in declaration order.
    tool_resolutions.sort(key=_unresolved)
    provider_resolutions.sort(key=_unresolved)
    return tool_resolutions, provider_resolutions


def _unresolved(entry: dict[str, Any]) -> bool:
    return bool(entry["status"] != AVAILABLE)


def _tool_resolutions(
    function_name: str,
    mode: str,
    items: list[Any],
    listed: list[ToolList],
    sources: tuple[str, ...],
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, str | dict):
            continue
        wanted = ToolQuery.parse(item).wanted
        capability, tags = wanted.capability, list(wanted.required_tags)
        if not capability and not tags:
            continue
        head: dict[str, Any] = {"filter_capability": capability, "filter_mode": mode}
        if tags:
            head["filter_tags"] = tags
        head["function_name"] = function_name
        matched = [
            (tool, agent_id)
            for tool, agent_id in zip(listed, sources, strict=True)
            if not capability or tool["capability"] == capability
        ]
        entries.extend(
            {
                "endpoint": tool["endpoint"],
                **head,
                "mcp_tool": tool["name"],
                "provider_agent_id": agent_id,
                "provider_capability": tool["capability"],
                "status": AVAILABLE,
            }
            for tool, agent_id in matched
        )
        if not matched:
            entries.append({**head, "status": UNRESOLVED})
    return entries


def _provider_resolution(
    function_name: str, wanted: Dependency, chosen: dict[str, Any] | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if chosen is not None:
        entry["endpoint"] = chosen["endpoint"]
    entry["function_name"] = function_name
    if chosen is not None:
        entry["mcp_tool"] = chosen["name"]
        entry["provider_agent_id"] = chosen["agent_id"]
    entry["required_capability"] = wanted.capability
    if wanted.required_tags:
        entry["required_tags"] = list(wanted.required_tags)
    entry["status"] = AVAILABLE if chosen is not None else UNRESOLVED
    return entry
