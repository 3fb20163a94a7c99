"""Dependency resolution: which provider a declared dependency gets.

Pure functions, no I/O and no randomness, so every replica gives the same answer for the same
view. The rules follow MCP Mesh's own registry (CONTRACT.md):

- candidates are tools of *healthy* agents in the dependency's namespace whose capability equals
  the dependency's;
- tags: ``"t"`` is required (+5), ``"+t"`` preferred (+10 when present), ``"-t"`` excludes;
  a nested list is an OR group (at least one alternative present; +10 for a present preferred
  alternative, otherwise +5);
- version: semver constraints (``=, !=, >, <, >=, <=, ~, ^``, ranges, ``||``); an empty
  constraint matches anything; an unparsable version or constraint falls back to exact string
  comparison;
- schema: a dependency with a ``matchMode`` only takes providers whose output schema is
  compatible with the one it expects (:mod:`registry.schemas`);
- availability: a healthy provider whose ``required: true`` dependencies are not met is
  *unavailable* and left out like an unhealthy one (:mod:`registry.availability` decides it);
- winner: highest tag score, then highest version (valid semver above unparsable ones), then
  the smallest agent id, then the smallest function name.

Semver parsing uses ``nodesemver`` (npm's range grammar, which is what MCP Mesh's Go registry
accepts through Masterminds/semver) rather than a hand-written parser.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nodesemver

from registry.schemas import Expected, refusal

UNRESOLVED = "unresolved"
AVAILABLE = "available"


@dataclass(frozen=True, slots=True)
class Provider:
    """One tool as a dependency can see it (derived from an agent's registration)."""

    agent_id: str
    function_name: str
    capability: str
    version: str
    tags: frozenset[str]
    namespace: str
    endpoint: str
    kwargs: dict[str, Any] | None
    tool: dict[str, Any]
    """The normalized tool as registered: LLM tool lists show its description and schema, and a
    change to any of it must count as a provider change (it invalidates cached answers)."""
    key: str = field(init=False, compare=False, repr=False)
    """``agent_id:function_name``, how the audit names a candidate: built once here rather than
    in every stage of every traced resolution (six stages of ten candidates per registration)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.agent_id}:{self.function_name}")

    def __hash__(self) -> int:  # kwargs is a dict; identity is (agent, function)
        return hash((self.agent_id, self.function_name))


@dataclass(frozen=True, slots=True)
class Dependency:
    """A declared dependency, parsed once at registration."""

    capability: str
    namespace: str
    version: str
    required_tags: tuple[str, ...]
    alternatives: tuple[tuple[str, ...], ...]
    schema: Expected | None = None
    """The schema check its ``matchMode`` asks for (None: none)."""
    required: bool = False
    """``required: true``: the declaring tool is unavailable while this is not met."""

    @classmethod
    def from_spec(cls, spec: dict[str, Any], default_namespace: str) -> Dependency:
        """Parse a normalized dependency dict (see registry.registration)."""
        plain: list[str] = []
        groups: list[tuple[str, ...]] = []
        for tag in spec.get("tags") or ():
            if isinstance(tag, str):
                plain.append(tag)
            elif isinstance(tag, list):
                groups.append(tuple(t for t in tag if isinstance(t, str)))
        return cls(
            capability=spec["capability"],
            namespace=spec.get("namespace") or default_namespace,
            version=spec.get("version") or "",
            required_tags=tuple(plain),
            alternatives=tuple(groups),
            schema=Expected.parse(spec),
            required=spec.get("required") is True,
        )


def tag_score(tags: frozenset[str], dep: Dependency) -> int | None:
    """The tag score of a provider with ``tags`` for ``dep``, or None when it does not match."""
    score = 0
    for tag in dep.required_tags:
        if not tag:
            continue
        if tag[0] == "-":
            if tag[1:] and tag[1:] in tags:
                return None
        elif tag[0] == "+":
            if tag[1:] and tag[1:] in tags:
                score += 10
        elif tag in tags:
            score += 5
        else:
            return None
    for group in dep.alternatives:
        if not group:
            continue
        best = 0
        for alt in group:
            if not alt:
                continue
            if alt[0] == "-":
                if alt[1:] and alt[1:] in tags:
                    return None
            elif alt[0] == "+":
                if alt[1:] and alt[1:] in tags:
                    best = 10
            elif alt in tags:
                best = max(best, 5)
        if best == 0:
            return None
        score += best
    return score


@functools.lru_cache(maxsize=4096)
def _parse_version(version: str) -> nodesemver.SemVer | None:
    try:
        return nodesemver.make_semver(version.strip(), loose=True)
    except (ValueError, TypeError):
        return None


_NOT_EQUAL = re.compile(r"!=\s*([^\s,|]+)")


def _npm_range(constraint: str) -> str:
    """A Masterminds constraint in npm's range grammar (which nodesemver parses).

    Masterminds ANDs comparators separated by commas, npm by spaces; and npm has no ``!=``, so
    each ``!=v`` becomes ``<v || >v``, distributed over the comparators it is ANDed with
    (npm's prerelease rule then treats both sides as Masterminds treats ``!=``).
    """
    alternatives = []
    for alternative in constraint.split("||"):
        excluded = _NOT_EQUAL.findall(alternative)
        rest = _NOT_EQUAL.sub(" ", alternative).replace(",", " ").split()
        for sides in itertools.product("<>", repeat=len(excluded)):
            alternatives.append(" ".join([*rest, *map("".join, zip(sides, excluded, strict=True))]))
    return " || ".join(alternatives)


@functools.lru_cache(maxsize=4096)
def _parse_range(constraint: str) -> nodesemver.Range | None:
    try:
        return nodesemver.make_range(_npm_range(constraint), loose=True)
    except (ValueError, TypeError):
        return None


def version_matches(version: str, constraint: str) -> bool:
    """Whether provider ``version`` satisfies ``constraint`` (rules in the module docstring)."""
    if not constraint:
        return True
    if not version:
        return False
    parsed = _parse_version(version)
    if parsed is None:
        return version == constraint
    allowed = _parse_range(constraint)
    if allowed is None:
        return version == constraint
    return bool(allowed.test(parsed))


@functools.lru_cache(maxsize=4096)
def _version_key(version: str) -> tuple[Any, ...]:
    """Sort key: valid semver above anything unparsable, each ordered among themselves.

    Semver precedence as a plain tuple, so choosing among candidates compares tuples in C
    instead of calling nodesemver's compare (which was a tenth of applying a registration):
    a release outranks its prereleases; prerelease identifiers compare numerically when
    numeric, numeric below alphanumeric, and a longer list outranks its own prefix.
    """
    parsed = _parse_version(version)
    if parsed is None:
        return (0, version)
    pre = parsed.prerelease
    rank = (
        (1,)
        if not pre
        else (0, *((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in pre))
    )
    return (1, (parsed.major, parsed.minor, parsed.patch, rank))


def compare_semver(a: str, b: str) -> int | None:
    """-1, 0 or 1 as version ``a`` precedes, equals or follows ``b``; None unless both are valid
    semver (callers that rank by something else when versions are incomparable need to know)."""
    key_a, key_b = _version_key(a), _version_key(b)
    if key_a[0] == 0 or key_b[0] == 0:
        return None
    return (key_a > key_b) - (key_a < key_b)


Stages = list[dict[str, Any]]
"""The audit's account of one resolution: a dict per stage, as the Go registry records it."""

TIEBREAKER = "HighestScoreThenVersion"
"""The Go registry's name for the winner rule, recorded in the audit's last stage."""


STAGE_LIST_LIMIT = 64
"""Candidates an audit stage lists as kept, and as evicted, at most: a capability with
thousands of providers would otherwise make every recorded trace (kept in every replica's
history and snapshots) hundreds of kilobytes. The Go registry lists them all."""


def _stage(
    stages: Stages | None,
    name: str,
    kept: Iterable[Provider],
    evicted: list[dict[str, Any]],
    previous: list[str] | None = None,
) -> list[str]:
    """Append a stage to ``stages`` and return its kept list. A stage that evicted nobody keeps
    what the one before it kept, in the same order: given that stage's list as ``previous``, it
    copies it instead of building it again (most resolutions evict nobody in most stages)."""
    if stages is None:
        return []
    if previous is None or evicted:
        previous = [p.key for p in itertools.islice(kept, STAGE_LIST_LIMIT)]
    stage: dict[str, Any] = {"stage": name, "kept": list(previous)}
    if evicted:
        stage["evicted"] = evicted[:STAGE_LIST_LIMIT]
    stages.append(stage)
    return previous


def _evicted(provider: Provider, reason: str, details: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": provider.key, "reason": reason}
    if details:
        item["details"] = details
    return item


def tag_refusal(tags: frozenset[str], dep: Dependency) -> tuple[str, dict[str, Any] | None]:
    """Why ``tags`` fail ``dep`` (for a provider :func:`tag_score` refuses), as the Go
    registry's audit names it: an excluded tag present, else the required tags missing, else
    the first OR group with nothing present."""
    missing = []
    for tag in dep.required_tags:
        if tag.startswith("-"):
            if tag[1:] and tag[1:] in tags:
                return "ExtraTagDisallowed", {"disallowed": [tag[1:]]}
        elif tag and not tag.startswith("+") and tag not in tags:
            missing.append(tag)
    if missing:
        return "MissingTag", {"missing": missing}
    for group in dep.alternatives:
        present = False
        for alt in group:
            if alt.startswith("-"):
                if alt[1:] and alt[1:] in tags:
                    return "ExtraTagDisallowed", {"disallowed": [alt[1:]]}
            elif alt and alt.removeprefix("+") in tags:
                present = True
        if not present:
            return "MissingTag", {"missing_one_of": list(group)}
    return "MissingTag", None


def matches(dep: Dependency, provider: Provider) -> bool:
    """Whether ``provider`` (of ``dep``'s capability) passes every constraint :func:`choose`
    applies after health: namespace, tags, version and schema."""
    return (
        provider.namespace == dep.namespace
        and tag_score(provider.tags, dep) is not None
        and version_matches(provider.version, dep.version)
        and refusal(dep.schema, provider.tool) is None
    )


Unavailability = Callable[[Provider], str]
"""Why a healthy provider is unavailable all the same, ``""`` when it is not."""


def choose(
    dep: Dependency,
    candidates: Iterable[Provider],
    is_healthy: Callable[[str], bool],
    consumer_id: str,
    stages: Stages | None = None,
    unavailable: Unavailability | None = None,
) -> Provider | None:
    """The provider ``dep`` resolves to among ``candidates`` (all offering its capability).

    ``is_healthy(agent_id) -> bool`` reports the current health, ``unavailable`` (when given)
    whether a healthy provider is unavailable all the same (registry.availability). The
    consumer's own tools are used only when no other agent qualifies. Given ``stages``, the
    audit's account of each step is appended to it, in the Go registry's stage order (health,
    capability_match, tags, version, schema, tiebreaker; a stage that keeps nobody is the
    last), so one function decides both the answer and its explanation.
    """
    pool = [p for p in candidates if p.namespace == dep.namespace]
    healthy = []
    gone: list[dict[str, Any]] = []
    for provider in pool:
        if not is_healthy(provider.agent_id):
            if stages is not None:
                gone.append(_evicted(provider, "Unhealthy", {"status": "unhealthy"}))
        elif unavailable is not None and (reason := unavailable(provider)):
            if stages is not None:
                gone.append(_evicted(provider, "Unavailable", {"reason": reason}))
        else:
            healthy.append(provider)
    listed = _stage(stages, "health", healthy, gone)
    if healthy:
        listed = _stage(stages, "capability_match", healthy, [], listed)
    if not healthy:
        return None
    scored: list[tuple[Provider, int]] = []
    refused: list[dict[str, Any]] = []
    for provider in healthy:
        score = tag_score(provider.tags, dep)
        if score is not None:
            scored.append((provider, score))
        elif stages is not None:
            refused.append(_evicted(provider, *tag_refusal(provider.tags, dep)))
    listed = _stage(stages, "tags", (p for p, _ in scored), refused, listed)
    passed: list[tuple[Provider, int]] = []
    refused = []
    for provider, score in scored:
        if version_matches(provider.version, dep.version):
            passed.append((provider, score))
        elif stages is not None:
            details = {"version": provider.version, "constraint": dep.version}
            refused.append(_evicted(provider, "VersionConstraintFailed", details))
    if scored:
        listed = _stage(stages, "version", (p for p, _ in passed), refused, listed)
    fitting = []
    refused = []
    for provider, score in passed:
        why = refusal(dep.schema, provider.tool)
        if why is None:
            fitting.append((provider, score))
        else:
            refused.append(_evicted(provider, "SchemaIncompatible", why))
    if passed:
        _stage(stages, "schema", (p for p, _ in fitting), refused, listed)
    if not fitting:
        return None

    # Larger is better (someone else, more tags matched, higher version); on a tie the
    # smallest (agent id, function name) wins. Each rank is computed once: this runs for every
    # resolution, and the traced one orders every candidate by it.
    ranked = [
        ((p.agent_id != consumer_id, score, _version_key(p.version)), p) for p, score in fitting
    ]
    if stages is None:
        best, winner = ranked[0]
        for rank_now, provider in ranked[1:]:
            if rank_now > best or (
                rank_now == best
                and (provider.agent_id, provider.function_name)
                < (winner.agent_id, winner.function_name)
            ):
                best, winner = rank_now, provider
        return winner
    # The order listed: by the tie rule, then stably by rank (a reversed sort keeps equal
    # items in order), so the winner comes first.
    ranked.sort(key=lambda rp: (rp[1].agent_id, rp[1].function_name))
    ranked.sort(key=lambda rp: rp[0], reverse=True)
    winner = ranked[0][1]
    _stage(stages, "tiebreaker", (p for _, p in ranked), [])
    stages[-1].update(chosen=winner.key, reason=TIEBREAKER)
    return winner


def entry(dep: Dependency, provider: Provider | None) -> dict[str, Any]:
    """One ``dependencies_resolved`` item, in the Go registry's shape."""
    if provider is None:
        return {
            "agent_id": "",
            "capability": dep.capability,
            "endpoint": "",
            "function_name": "",
            "status": UNRESOLVED,
        }
    item: dict[str, Any] = {
        "agent_id": provider.agent_id,
        "capability": dep.capability,
        "endpoint": provider.endpoint,
        "function_name": provider.function_name,
        "status": AVAILABLE,
    }
    if provider.kwargs:
        item["kwargs"] = provider.kwargs
    return item
