"""Capability availability from ``required: true`` dependencies (the Go registry's issue #1249).

A tool is *available* when its agent is healthy and each of its required dependencies resolves
(capability, namespace, tags, version, schema: :func:`registry.resolve.matches`) to an
available tool. An unavailable tool is left out of consumers' resolution like an unhealthy one,
and listed with ``available: false`` and the first broken requirement as its reason.

The definition is recursive. The Go registry evaluates it depth first with a memo per request,
failing closed where it meets a loop, which makes a loop's verdicts depend on where the walk
started. Here it is the *least fixed point*: a tool counts as available only if a finite chain
of available tools proves it, computed by propagating from the tools that require nothing
(:func:`unavailable`), iteratively, in time linear in the candidates of the requirements. The
answer depends only on the view, never on what was asked first or what a cache holds, so every
replica gives the same one inside ``apply``; and a loop of requirements (which registration
refuses, :func:`closing_loop`, but two replicas may each accept one half of) is unavailable as a
whole, as the Go registry's fail-closed walk intends.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

from registry.resolve import Dependency, Provider, matches, tag_score, version_matches

Key = tuple[str, str, str]
"""A tool: (agent id, function name, capability)."""

Graph = Mapping[str, Collection[str]]
"""Required edges by capability name: capability -> the capabilities its tools require."""


class RequiredLoop(ValueError):
    """A registration whose required dependencies would close a loop (answered with 400)."""

    def __init__(self, loop: Sequence[str]) -> None:
        super().__init__(f"required dependency cycle: {' → '.join(loop)}")
        self.loop = list(loop)


Requirements = Callable[[Key], Sequence[Dependency] | None]
"""A tool's ``required`` dependencies; None for a tool that declares none."""


def unavailable(
    roots: Iterable[Key],
    requirements: Requirements,
    providers: Callable[[str], Iterable[Provider]],
    is_healthy: Callable[[str], bool],
    known: Mapping[Key, str],
) -> dict[Key, str]:
    """Whether the ``roots`` (tools declaring required dependencies) and every such tool their
    requirements lead to have them all met: ``""`` when so, else the first unmet one in
    declaration order in the Go registry's words (:func:`broken_edge`). Whether the tool's own
    agent is healthy is the caller's to check (the claim gate deliberately does not).

    ``known`` holds answers this function gave before that are still true (the view drops those a
    change may reach): they are used, not evaluated again, and the answer holds the newly
    evaluated tools only. A tool's answer
    depends only on what its requirements lead to, so evaluating only that part is exact.

    Propagation: each requirement waits on its healthy matching candidates that have
    requirements of their own; one that requires nothing (or is known available) settles it at
    once. A tool whose last open requirement is settled, and whose agent is healthy, becomes
    available and settles the requirements waiting on it.
    """
    open_count: dict[Key, int] = {}
    settled: dict[Key, list[bool]] = {}
    waiting: dict[Key, list[tuple[Key, int]]] = {}
    ready: deque[Key] = deque()
    pending = [key for key in roots if key not in known]
    seen = set(pending)
    while pending:
        key = pending.pop()
        flags = []
        for position, dep in enumerate(requirements(key) or ()):
            met = False
            for candidate in providers(dep.capability):
                if not is_healthy(candidate.agent_id) or not matches(dep, candidate):
                    continue
                candidate_key = (candidate.agent_id, candidate.function_name, candidate.capability)
                before = known.get(candidate_key)
                if before is not None or requirements(candidate_key) is None:
                    if not before:
                        met = True
                        break
                    continue
                waiting.setdefault(candidate_key, []).append((key, position))
                if candidate_key not in seen:
                    seen.add(candidate_key)
                    pending.append(candidate_key)
            flags.append(met)
        settled[key] = flags
        open_count[key] = flags.count(False)
        if open_count[key] == 0 and is_healthy(key[0]):
            ready.append(key)
    while ready:
        key = ready.popleft()
        for waiter, position in waiting.pop(key, ()):
            if settled[waiter][position]:
                continue
            settled[waiter][position] = True
            open_count[waiter] -= 1
            if open_count[waiter] == 0 and is_healthy(waiter[0]):
                ready.append(waiter)
    answers = {}
    for key, flags in settled.items():
        answers[key] = ""
        if open_count[key]:
            dep = (requirements(key) or ())[flags.index(False)]
            answers[key] = broken_edge(dep, providers(dep.capability), is_healthy)
    return answers


def broken_edge(
    dep: Dependency, candidates: Iterable[Provider], is_healthy: Callable[[str], bool]
) -> str:
    """Why the required dependency ``dep`` is not met, in the Go registry's words: of the
    providers matching its tags and version (schema aside, as the Go registry words it), the
    first unhealthy one, else the first (unavailable through its own requirements); with none,
    that it is unresolved and which constraints nobody meets."""
    matching = [
        p
        for p in candidates
        if p.namespace == dep.namespace
        and tag_score(p.tags, dep) is not None
        and version_matches(p.version, dep.version)
    ]
    if matching:
        down = next((p for p in matching if not is_healthy(p.agent_id)), None)
        state, named = ("unhealthy", down) if down is not None else ("unavailable", matching[0])
        return f"required dep '{dep.capability}' unavailable (provider {named.agent_id} {state})"
    constraints = []
    if dep.required_tags:
        constraints.append(f"tags=[{' '.join(dep.required_tags)}]")
    if dep.version:
        constraints.append(f"version {dep.version}")
    if dep.schema is not None:
        constraints.append(f"schema={dep.schema.mode}")
    if not constraints:
        return f"required dep '{dep.capability}' unresolved"
    return (
        f"required dep '{dep.capability}' unresolved (no provider matches {', '.join(constraints)})"
    )


def _walk(
    graph: Graph, root: str, done: set[str], goal: Callable[[str, set[str]], bool]
) -> list[str] | None:
    """Depth first from ``root`` (neighbours in sorted order; nodes in ``done`` skipped, and
    added once explored): the path from ``root`` to the first neighbour of the path that
    ``goal(node, nodes on the path)`` accepts, ending with it; None when there is none.
    Iterative, so a chain of requirements of any length fits."""
    path = [root]
    on_path = {root}
    branches: list[Iterator[str]] = [iter(sorted(graph.get(root, ())))]
    while branches:
        step = next(branches[-1], None)
        if step is None:
            branches.pop()
            on_path.discard(node := path.pop())
            done.add(node)
            continue
        if goal(step, on_path):
            return [*path, step]
        if step in done or step in on_path:
            continue
        path.append(step)
        on_path.add(step)
        branches.append(iter(sorted(graph.get(step, ()))))
    return None


def _reaching(goal: str) -> Callable[[str, set[str]], bool]:
    """A :func:`_walk` goal: the node ``goal``."""
    return lambda node, _on_path: node == goal


def find_loop(graph: Graph) -> list[str] | None:
    """The first loop of ``graph`` depth first from the smallest capability, neighbours in
    sorted order, as the path that closes it (``["a", "b", "a"]``): the loop the Go registry
    names for the same graph. None when there is none."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path = _walk(graph, root, done, lambda node, on_path: node in on_path)
        if path is not None:
            return path[path.index(path[-1]) :]
    return None


def closing_loop(graph: Graph, new: Collection[tuple[str, str]]) -> list[str] | None:
    """The loop of required edges a registration would close through one of its ``new``
    edges (those the view does not hold for its agent yet), in ``graph`` (every agent's edges,
    the registration's in place of its agent's); None when there is none.

    Only a loop through a new edge is the registration's doing: one already in the view (two
    replicas each accepted one half) must not refuse every later registration, nor the next
    unchanged heartbeat of its members. The loop is named as the Go registry names it when it is
    the whole graph's first loop (always so unless the view already holds one); otherwise it is
    the first found from the new edges in sorted order.
    """
    for source, target in sorted(new):
        if source == target:
            loop = [source, source]
            break
        path = _walk(graph, target, set(), _reaching(source))
        if path is not None:
            loop = [source, *path]
            break
    else:
        return None
    first = find_loop(graph)
    if first is not None and any(pair in new for pair in itertools.pairwise(first)):
        return first
    return loop
