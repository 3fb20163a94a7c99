"""The materialized view: the registry's current state, built only from the event log.

:func:`apply` is the one way the view changes. It is deterministic, reads no clock and does no
I/O, so every replica that applies the same log holds the same view, and "last snapshot plus
replay of the tail" equals "replay of everything". For speed it updates the view in place (a
registry with 10,000 agents cannot copy itself per event); the view is owned by one applier.

Besides agents the view keeps derived indexes (providers by capability, parsed dependencies)
that are rebuilt from the agents on load rather than stored, the canonical schemas the agents
carry (:mod:`registry.schemas`; stored only for when each first arrived), and a bounded history
of registry events for ``GET /events``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from registry import audit, availability, events, jobs, llm, trust
from registry.events import Event
from registry.registration import endpoint
from registry.resolve import Dependency, Provider, Stages, choose, entry
from registry.schemas import SchemaStore

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
STATE_VERSION = 1

Resolution = dict[str, list[dict[str, Any]]]
"""``dependencies_resolved``: function name -> one entry per declared dependency."""


@dataclass(slots=True)
class Agent:
    """One registered agent as the log describes it."""

    registration: dict[str, Any]
    status: str
    created_ms: int
    updated_ms: int
    status_ms: int
    delivered: Resolution
    """The resolution last sent to this agent (what HEAD /heartbeat compares against)."""
    llm_delivered: str = ""
    """The digest of the LLM tools and providers last sent to it (see registry.llm.Answer)."""
    rotation_index: int = 0
    """The log index of a rotation (``POST /admin/rotate``) that asked it for a full heartbeat
    it has not sent yet; 0 when none is pending."""

    @property
    def agent_id(self) -> str:
        return str(self.registration["agent_id"])

    def to_state(self) -> list[Any]:
        return [
            self.registration,
            self.status,
            self.created_ms,
            self.updated_ms,
            self.status_ms,
            self.delivered,
            self.llm_delivered,
            self.rotation_index,
        ]

    @classmethod
    def from_state(cls, state: list[Any]) -> Agent:
        # Snapshots written before LLM answers (rotations) were recorded hold six (seven) fields.
        return cls(*state)


def _providers_of(registration: dict[str, Any]) -> list[Provider]:
    namespace = registration.get("namespace") or "default"
    where = endpoint(registration)
    return [
        Provider(
            agent_id=registration["agent_id"],
            function_name=tool["function_name"],
            capability=tool["capability"],
            version=tool.get("version") or "",
            tags=frozenset(t for t in tool.get("tags") or () if isinstance(t, str)),
            namespace=namespace,
            endpoint=where,
            kwargs=tool.get("kwargs") or None,
            tool=tool,
        )
        for tool in registration.get("tools") or ()
    ]


def _dependencies_of(registration: dict[str, Any]) -> list[tuple[str, list[Dependency]]]:
    namespace = registration.get("namespace") or "default"
    return [
        (
            tool["function_name"],
            [Dependency.from_spec(dep, namespace) for dep in tool["dependencies"]],
        )
        for tool in registration.get("tools") or ()
        if tool.get("dependencies")
    ]


class View:
    """Agents, their health, the provider index, recent registry events, and MeshJobs."""

    def __init__(self, history_limit: int = 1000) -> None:
        self.applied_index = 0
        self.agents: dict[str, Agent] = {}
        self.jobs = jobs.JobsState()
        self.history: deque[dict[str, Any]] = deque(maxlen=history_limit)
        self.schemas = SchemaStore()
        self.entities: dict[str, dict[str, Any]] = {}
        """Trusted entity CAs by name (registry/trust.py)."""
        self.revoked_entities: dict[str, str] = {}
        """Fingerprints of entity CAs revoked or replaced, with their name (registry/trust.py)."""
        self.audits: dict[str, dict[tuple[str, int], audit.Slot]] = {}
        """Per consumer, what was last recorded in the audit of each (function, dependency
        index): what the next resolution's audit event is decided against."""
        # Derived state (rebuilt on load, never stored).
        self._providers: dict[str, dict[tuple[str, str], Provider]] = {}
        self._dependencies: dict[str, list[tuple[str, list[Dependency]]]] = {}
        self._epoch = 0
        self._provider_order: dict[str, int] = {}
        """When each agent's providers last changed (a counter): the order candidates are
        listed in (the audit shows it, as the Go registry lists the newest rows last), which a
        snapshot keeps so that a restored replica lists them as every other replica does."""
        self._capability_epoch: dict[str, int] = {}
        self._resolved: dict[str, tuple[int, Resolution]] = {}
        self._llm_answers: dict[str, tuple[int, llm.Answer]] = {}
        self._audit_clean: dict[str, int] = {}
        """Per consumer, the epoch as of which an upsert of it would record no audit event."""
        self._requirements: dict[str, dict[tuple[str, str], list[Dependency]]] = {}
        """Per agent, its tools declaring ``required`` dependencies, by (function name,
        capability): those dependencies."""
        self._required_by: dict[str, set[availability.Key]] = {}
        """Per capability, the tools requiring it: whose availability (and so whose consumers'
        answers) a change of its providers may change."""
        self._requiring: dict[str, set[availability.Key]] = {}
        """Per capability, its tools that declare ``required`` dependencies."""
        self._unmet: dict[availability.Key, str] = {}
        """registry.availability.unavailable's answers, each dropped when a change may reach it
        (:meth:`_touch`): a write pays for what it changed, not for every chain in the mesh."""

    # -- queries -----------------------------------------------------------------------------

    def is_healthy(self, agent_id: str) -> bool:
        agent = self.agents.get(agent_id)
        return agent is not None and agent.status == HEALTHY

    def providers(self, capability: str) -> Iterator[Provider]:
        return iter(self._providers.get(capability, {}).values())

    def capabilities(self) -> dict[str, list[Provider]]:
        return {cap: list(by_key.values()) for cap, by_key in self._providers.items() if by_key}

    def dependencies(self, agent_id: str) -> list[tuple[str, list[Dependency]]]:
        return self._dependencies.get(agent_id, [])

    def requirements_unmet(self) -> dict[availability.Key, str]:
        """Why each tool with unmet ``required`` dependencies has them unmet (whatever its own
        agent's health, see :func:`registry.availability.unavailable`)."""
        roots = [
            (agent_id, function_name, capability)
            for agent_id, tools in self._requirements.items()
            for function_name, capability in tools
        ]
        return {key: reason for key, reason in self._evaluate(roots).items() if reason}

    def unavailable_reason(self, provider: Provider) -> str:
        """Why ``provider`` is unavailable whatever its agent's health (the caller checks that),
        ``""`` when it is not."""
        tool = (provider.function_name, provider.capability)
        if tool not in self._requirements.get(provider.agent_id, ()):
            return ""
        key = (provider.agent_id, *tool)
        return self._evaluate([key])[key]

    def _evaluate(self, roots: list[availability.Key]) -> dict[availability.Key, str]:
        """Every answer known, the ``roots`` evaluated if they were not (only what their
        requirements lead to)."""
        if any(key not in self._unmet for key in roots):
            self._unmet.update(
                availability.unavailable(
                    roots, self._required, self.providers, self.is_healthy, self._unmet
                )
            )
        return self._unmet

    def _required(self, key: availability.Key) -> list[Dependency] | None:
        return self._requirements.get(key[0], {}).get((key[1], key[2]))

    def availability(self, agent_id: str) -> tuple[str, ...]:
        """:meth:`unavailable_reason` of each of the agent's tools, in registration order."""
        agent = self.agents.get(agent_id)
        tools = agent.registration.get("tools") or () if agent is not None else ()
        mine = self._requirements.get(agent_id)
        if not mine:
            return ("",) * len(tools)
        keys = [(agent_id, tool["function_name"], tool["capability"]) for tool in tools]
        unmet = self._evaluate([key for key in keys if (key[1], key[2]) in mine])
        return tuple(unmet.get(key, "") for key in keys)

    def required_loop(self, registration: dict[str, Any]) -> list[str] | None:
        """The loop of ``required`` dependencies (by capability name, whatever the tags,
        versions and namespaces, as the Go registry checks it) that ``registration`` would
        close through an edge it adds: :func:`registry.availability.closing_loop`."""
        incoming: dict[str, set[str]] = {}
        for tool in registration.get("tools") or ():
            for spec in tool.get("dependencies") or ():
                if spec.get("required") is True:
                    incoming.setdefault(tool["capability"], set()).add(spec["capability"])
        if not incoming:  # the common case: nothing to build
            return None
        agent_id = registration["agent_id"]
        known = self._required_edges(agent_id, mine=True)
        new = {
            (source, target)
            for source, targets in incoming.items()
            for target in targets
            if target not in known.get(source, ())
        }
        if not new:  # an unchanged heartbeat, or fewer requirements: closes nothing
            return None
        graph = self._required_edges(agent_id, mine=False)
        for source, targets in incoming.items():
            graph.setdefault(source, set()).update(targets)
        return availability.closing_loop(graph, new)

    def _required_edges(self, agent_id: str, mine: bool) -> dict[str, set[str]]:
        """Required edges by capability name (registry.availability.Graph) of ``agent_id``'s
        tools (``mine``), or of every other agent's."""
        held = (
            [self._requirements.get(agent_id, {})]
            if mine
            else [tools for holder, tools in self._requirements.items() if holder != agent_id]
        )
        edges: dict[str, set[str]] = {}
        for tools in held:
            for (_, capability), deps in tools.items():
                edges.setdefault(capability, set()).update(dep.capability for dep in deps)
        return edges

    def resolution(self, agent_id: str) -> Resolution:
        """What ``agent_id``'s dependencies resolve to now (cached until a provider changes)."""
        deps = self._dependencies.get(agent_id)
        if not deps:
            return {}
        cached = self._resolved.get(agent_id)
        if cached is not None and self._unchanged_since(
            cached[0], (dep.capability for _, specs in deps for dep in specs)
        ):
            return cached[1]
        return self._resolve(agent_id, deps, None)

    def audit_due(self, agent_id: str) -> bool:
        """Whether applying an upsert of ``agent_id`` now would record an audit event (so an
        unchanged full heartbeat is still worth a log entry, as the Go registry records one at
        every full heartbeat whose trace is new). Cached until a provider it sees changes."""
        deps = self._dependencies.get(agent_id)
        if not deps:
            return False
        clean = self._audit_clean.get(agent_id)
        if clean is not None and self._unchanged_since(
            clean, (dep.capability for _, specs in deps for dep in specs)
        ):
            return False
        slots = self.audits.get(agent_id, {})
        for function_name, specs in deps:
            for dep_index, dep in enumerate(specs):
                traced = self._traced(agent_id, dep_index, dep)[1]
                if audit.decide(traced, slots.get((function_name, dep_index)))[0] is not None:
                    return True
        self._audit_clean[agent_id] = self._epoch
        return False

    def _resolve(
        self,
        agent_id: str,
        deps: list[tuple[str, list[Dependency]]],
        audited: tuple[int, Event] | None,
    ) -> Resolution:
        """Resolve and cache; with the log position ``audited`` (index, event) of the consumer's
        own upsert, also record the audit events its resolutions warrant (registry/audit.py)."""
        result: Resolution = {}
        for function_name, specs in deps:
            entries = []
            for dep_index, dep in enumerate(specs):
                if audited is None:
                    winner = choose(
                        dep,
                        self.providers(dep.capability),
                        self.is_healthy,
                        agent_id,
                        None,
                        self.unavailable_reason,
                    )
                else:
                    winner, traced = self._traced(agent_id, dep_index, dep)
                    self._audit(audited, agent_id, function_name, traced)
                entries.append(entry(dep, winner))
            result[function_name] = entries
        self._resolved[agent_id] = (self._epoch, result)
        if audited is not None:  # what it recorded is now the last trace of each dependency
            self._audit_clean[agent_id] = self._epoch
        return result

    def _traced(
        self, agent_id: str, dep_index: int, dep: Dependency
    ) -> tuple[Provider | None, dict[str, Any]]:
        """What one dependency resolves to now, and the audit's trace of that resolution."""
        stages: Stages = []
        candidates = self.providers(dep.capability)
        winner = choose(dep, candidates, self.is_healthy, agent_id, stages, self.unavailable_reason)
        return winner, audit.trace(agent_id, dep_index, dep, stages, winner)

    def _audit(
        self, audited: tuple[int, Event], agent_id: str, function_name: str, traced: dict[str, Any]
    ) -> None:
        slots = self.audits.setdefault(agent_id, {})
        key = (function_name, traced["dep_index"])
        event_type, slot = audit.decide(traced, slots.get(key))
        if event_type is None or slot is None:
            return
        slots[key] = slot
        index, event = audited
        _record(self, index, event, event_type, agent_id, traced, function_name)

    def llm_answer(self, agent_id: str) -> llm.Answer:
        """What ``agent_id``'s LLM functions get now (cached until a provider they see changes)."""
        cached = self._llm_answers.get(agent_id)
        if cached is not None and self._unchanged_since(cached[0], cached[1].capabilities):
            return cached[1]
        agent = self.agents.get(agent_id)
        result = llm.NOTHING if agent is None else llm.answer(self, agent.registration)
        self._llm_answers[agent_id] = (self._epoch, result)
        return result

    def _unchanged_since(self, epoch: int, capabilities: Iterable[str] | None) -> bool:
        """Whether no provider of ``capabilities`` (of any capability, for None) changed after
        ``epoch``."""
        if capabilities is None:
            return self._epoch <= epoch
        return all(self._capability_epoch.get(c, 0) <= epoch for c in capabilities)

    def resolution_changed(self, agent_id: str) -> bool:
        """Whether the agent's resolution or LLM answer differs from the one it was last sent."""
        agent = self.agents[agent_id]
        return (
            self.resolution(agent_id) != agent.delivered
            or self.llm_answer(agent_id).digest != agent.llm_delivered
        )

    def needs_full_heartbeat(self, agent_id: str) -> bool:
        """Whether HEAD /heartbeat answers 202 (and the next full heartbeat is logged): the
        agent's answer changed, or a rotation asked it to register again."""
        return bool(self.agents[agent_id].rotation_index) or self.resolution_changed(agent_id)

    def rotation_targets(self, entity_id: str) -> list[str]:
        """The agents a rotation of ``entity_id`` (every entity for ``""``) asks to register
        again: the healthy ones registered with a certificate of that entity, as the Go
        registry selects them."""
        return [
            agent_id
            for agent_id, agent in self.agents.items()
            if agent.status == HEALTHY
            and (not entity_id or agent.registration.get("entity_id") == entity_id)
        ]

    # -- derived-index maintenance ------------------------------------------------------------

    def _touch(self, capabilities: list[str]) -> None:
        """A change of these capabilities' providers, and so of those requiring them,
        transitively: their availability may change with it (a loop is walked once)."""
        self._epoch += 1
        pending, seen = list(capabilities), set()
        while pending:
            capability = pending.pop()
            if capability in seen:
                continue
            seen.add(capability)
            self._capability_epoch[capability] = self._epoch
            for key in self._requiring.get(capability, ()):
                self._unmet.pop(key, None)
            pending.extend(key[2] for key in self._required_by.get(capability, ()))

    def _index(self, agent_id: str, registration: dict[str, Any] | None, ts_ms: int) -> None:
        """Replace the agent's providers, dependencies and schemas (as of ``ts_ms``); bump epochs
        where providers changed."""
        current = self.agents.get(agent_id)
        self.schemas.update(
            agent_id, current.registration if current is not None else None, registration, ts_ms
        )
        old = _providers_of(current.registration) if current is not None else []
        new = _providers_of(registration) if registration is not None else []
        if old != new:
            for provider in old:
                self._providers[provider.capability].pop((agent_id, provider.function_name), None)
            for provider in new:
                self._providers.setdefault(provider.capability, {})[
                    (agent_id, provider.function_name)
                ] = provider
            self._touch([p.capability for p in old] + [p.capability for p in new])
            self._provider_order.pop(agent_id, None)
            if new:
                self._provider_order[agent_id] = self._epoch
        self._resolved.pop(agent_id, None)
        self._llm_answers.pop(agent_id, None)
        self._audit_clean.pop(agent_id, None)
        self._index_requirements(agent_id, registration)
        if registration is None:
            self._dependencies.pop(agent_id, None)
        else:
            self._dependencies[agent_id] = _dependencies_of(registration)

    def _index_requirements(self, agent_id: str, registration: dict[str, Any] | None) -> None:
        """Replace the agent's entries in the requirement indexes. A change of a tool's
        requirements is a change of its tool, so :meth:`_index` has touched its capability.
        Tools are told apart by function name *and* capability (two tools may share a function
        name); of two with both equal, the last one counts, as for providers."""
        for (function_name, capability), deps in self._requirements.pop(agent_id, {}).items():
            key = (agent_id, function_name, capability)
            self._requiring[capability].discard(key)
            self._unmet.pop(key, None)
            for dep in deps:
                self._required_by[dep.capability].discard(key)
        namespace = (registration or {}).get("namespace") or "default"
        tools: dict[tuple[str, str], list[Dependency]] = {}
        for tool in (registration or {}).get("tools") or ():
            tools[(tool["function_name"], tool["capability"])] = [
                Dependency.from_spec(spec, namespace)
                for spec in tool.get("dependencies") or ()
                if spec.get("required") is True
            ]
        for (function_name, capability), deps in tools.items():
            if not deps:
                continue
            key = (agent_id, function_name, capability)
            self._requirements.setdefault(agent_id, {})[(function_name, capability)] = deps
            self._requiring.setdefault(capability, set()).add(key)
            self._unmet.pop(key, None)
            for dep in deps:
                self._required_by.setdefault(dep.capability, set()).add(key)

    # -- snapshots ----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain data (msgpack-able) that :meth:`from_state` turns back into an equal view."""
        return {
            "version": STATE_VERSION,
            "applied_index": self.applied_index,
            "history_limit": self.history.maxlen,
            "agents": [agent.to_state() for agent in self.agents.values()],
            "provider_order": sorted(self._provider_order, key=self._provider_order.__getitem__),
            "history": list(self.history),
            "jobs": self.jobs.to_state(),
            "jobs_mode": self.jobs.mode_state(),
            "schemas": self.schemas.to_state(),
            "entities": dict(self.entities),  # entries are replaced, never mutated
            "revoked_entities": dict(self.revoked_entities),
            "audits": sorted(  # sorted: the slots' insertion order is not part of the state
                [agent_id, function_name, dep_index, *slot.to_state()]
                for agent_id, slots in self.audits.items()
                for (function_name, dep_index), slot in slots.items()
            ),
        }

    def replace(self, other: View) -> None:
        """Become ``other`` in place (everything holding this view sees the installed state)."""
        vars(self).clear()
        vars(self).update(vars(other))

    def digest(self) -> str:
        """A hash of the whole state: equal on every replica that applied the same log."""
        packed = msgpack.packb(self.to_state(), use_bin_type=True)
        return hashlib.sha256(packed).hexdigest()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> View:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown view state version {state.get('version')!r}")
        view = cls(history_limit=state["history_limit"])
        view.applied_index = state["applied_index"]
        # Snapshots written before schemas were kept have none: each schema then counts from
        # its agent's registration.
        view.schemas.restore(state.get("schemas", []))
        agents = [Agent.from_state(item) for item in state["agents"]]
        by_id = {agent.agent_id: agent for agent in agents}
        # Providers in the order kept (snapshots written before it was: the agents' order),
        # then the agents that provide nothing.
        ordered = state.get("provider_order", [])
        kept = set(ordered)
        for agent_id in [*ordered, *(a for a in by_id if a not in kept)]:
            view._index(agent_id, by_id[agent_id].registration, by_id[agent_id].created_ms)
        for agent in agents:
            view.agents[agent.agent_id] = agent
        view.schemas.prune()
        view.history.extend(state["history"])
        # Snapshots written before MeshJobs have no "jobs".
        view.jobs = jobs.JobsState.from_state(state.get("jobs", []), state.get("jobs_mode"))
        view.entities = dict(state.get("entities", {}))  # absent in older snapshots
        view.revoked_entities = dict(state.get("revoked_entities", {}))  # and this too
        for agent_id, function_name, dep_index, *slot in state.get("audits", []):
            view.audits.setdefault(agent_id, {})[(function_name, dep_index)] = audit.Slot(*slot)
        return view


def _record(
    view: View,
    index: int,
    event: Event,
    event_type: str,
    agent_id: str,
    data: dict[str, Any],
    function_name: str | None = None,
) -> None:
    agent = view.agents.get(agent_id)
    item = {
        "index": index,
        "event_type": event_type,
        "agent_id": agent_id,
        "agent_name": agent.registration.get("name", agent_id) if agent else agent_id,
        "timestamp_ms": event.ts_ms,
        "data": data,
    }
    if function_name is not None:
        item["function_name"] = function_name
    view.history.append(item)


def apply(view: View, index: int, event: Event) -> bool:
    """Apply the committed ``event`` at log ``index`` to ``view``; whether it took effect.

    Never fails on a decoded event: anything the proposer could not have meant (removing an
    unknown agent, a health change for an agent that has left) is a no-op, so every replica
    stays in step whatever order concurrent writers proposed in. The answer is how a writer
    learns the outcome of its own conditional event (a removal racing another removal): the
    proposer hands it back with the commit, since the bounded history may already have dropped
    the event's entry by the time the writer resumes.
    """
    if index <= view.applied_index:
        raise ValueError(f"event {index} already applied (applied index {view.applied_index})")
    view.applied_index = index
    if event.kind == events.UPSERT:
        _apply_upsert(view, index, event)
        return True
    if event.kind == events.REMOVE:
        return _apply_remove(view, index, event)
    if event.kind == events.HEALTH:
        return _apply_health(view, index, event)
    if event.kind in events.JOB_KINDS:
        return jobs.apply_event(view.jobs, index, event)
    if event.kind == events.TRUST_ENTITY:
        return trust.apply_trust(view.entities, view.revoked_entities, event.payload)
    if event.kind == events.REVOKE_ENTITY:
        return trust.apply_revoke(view.entities, view.revoked_entities, event.payload)
    if event.kind == events.ROTATE:
        return _apply_rotate(view, index, event)
    return False


def _apply_upsert(view: View, index: int, event: Event) -> None:
    registration: dict[str, Any] = event.payload["agent"]
    agent_id = registration["agent_id"]
    previous = view.agents.get(agent_id)
    view._index(agent_id, registration, event.ts_ms)
    data: dict[str, Any] = {}
    if previous is None:
        agent = Agent(registration, HEALTHY, event.ts_ms, event.ts_ms, event.ts_ms, {})
        view.agents[agent_id] = agent
        event_type = "register"
    else:
        agent = previous
        event_type = "update"
        if previous.registration != registration:
            data["reason"] = "registration_changed"
        if previous.status != HEALTHY:
            # As in the Go registry, a recovery is recorded as a register event.
            view._touch(_capabilities(registration))
            event_type = "register"
            data = {"reason": "recovery", "old_status": previous.status, "new_status": HEALTHY}
            agent.status, agent.status_ms = HEALTHY, event.ts_ms
        agent.registration = registration
        agent.updated_ms = event.ts_ms
    _record(view, index, event, event_type, agent_id, data)
    agent.delivered = view._resolve(agent_id, view.dependencies(agent_id), (index, event))
    agent.llm_delivered = view.llm_answer(agent_id).digest
    agent.rotation_index = 0


def _apply_rotate(view: View, index: int, event: Event) -> bool:
    """Mark the agents the rotation targets now (in log order, so every replica marks the
    same ones) and record a ``rotate`` event for each, with the data the Go registry gives."""
    entity_id = event.payload["entity_id"]
    targets = view.rotation_targets(entity_id)
    for agent_id in targets:
        agent = view.agents[agent_id]
        agent.rotation_index = index
        data = {
            "agent_id": agent_id,
            "name": agent.registration.get("name", agent_id),
            "entity_id": agent.registration.get("entity_id", ""),
            "reason": "cert_rotation",
        }
        _record(view, index, event, "rotate", agent_id, data)
    return bool(targets)


def _capabilities(registration: dict[str, Any]) -> list[str]:
    return [tool["capability"] for tool in registration.get("tools") or ()]


def _apply_remove(view: View, index: int, event: Event) -> bool:
    agent_id = event.payload["agent_id"]
    agent = view.agents.get(agent_id)
    reason = event.payload.get("reason")
    # An expiry decided while the agent was unhealthy does not remove it if it came back first.
    if agent is None or (reason == "expire" and agent.status == HEALTHY):
        return False
    event_type = "expire" if reason == "expire" else "unregister"
    _record(view, index, event, event_type, agent_id, {"reason": reason})
    view._index(agent_id, None, event.ts_ms)
    del view.agents[agent_id]
    view.audits.pop(agent_id, None)
    return True


def _apply_health(view: View, index: int, event: Event) -> bool:
    status = event.payload["status"]
    changed = False
    for agent_id in event.payload["agent_ids"]:
        agent = view.agents.get(agent_id)
        if agent is None or agent.status == status:
            continue
        old = agent.status
        changed = True
        agent.status, agent.status_ms = status, event.ts_ms
        view._touch(_capabilities(agent.registration))
        _record(
            view,
            index,
            event,
            "unhealthy" if status == UNHEALTHY else "register",
            agent_id,
            {
                "reason": "health_degradation" if status == UNHEALTHY else "recovery",
                "old_status": old,
                "new_status": status,
            },
        )
    return changed
