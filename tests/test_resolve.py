"""Dependency resolution: the Go registry's rules, and properties that must always hold."""

from __future__ import annotations

import random
from typing import Any

import nodesemver
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import events
from registry.registration import from_heartbeat
from registry.resolve import (
    Dependency,
    Stages,
    _parse_version,
    _version_key,
    choose,
    tag_score,
    version_matches,
)
from registry.view import View, apply
from tests.conftest import agent_body


def dep(*tags: Any, version: str = "", namespace: str = "default") -> Dependency:
    return Dependency.from_spec(
        {"capability": "c", "tags": list(tags), "version": version, "namespace": namespace},
        "default",
    )


def test_tag_rules() -> None:
    have = frozenset({"llm", "claude", "python"})
    assert tag_score(have, dep("llm")) == 5
    assert tag_score(have, dep("gpt")) is None
    assert tag_score(have, dep("+claude")) == 10
    assert tag_score(have, dep("+gpt")) == 0
    assert tag_score(have, dep("-claude")) is None
    assert tag_score(have, dep("-gpt")) == 0
    assert tag_score(have, dep("llm", ["python", "typescript"])) == 10
    assert tag_score(have, dep("llm", ["java", "typescript"])) is None
    assert tag_score(have, dep(["+claude", "gpt"])) == 10
    assert tag_score(have, dep(["-claude", "llm"])) is None
    assert tag_score(have, dep("llm", "+claude", "-gpt")) == 15


def test_version_rules() -> None:
    assert version_matches("1.2.3", ">=1.0.0")
    assert not version_matches("2.0.0", "^1.0.0")
    assert version_matches("1.4.0", "^1.0.0")
    assert version_matches("1.2.9", "~1.2.0")
    assert not version_matches("1.3.0", "~1.2.0")
    assert version_matches("1.5.0", ">=1.0.0, <2.0.0")
    assert not version_matches("2.5.0", ">=1.0.0, <2.0.0")
    assert version_matches("3.0.0", "^1.0.0 || ^3.0.0")
    assert not version_matches("1.0.0", "!=1.0.0")
    assert version_matches("1.2.0", "!=1.0.0")
    assert version_matches("1.2.0", ">=1.0.0, != 1.1.0")
    assert not version_matches("1.1.0", ">=1.0.0, != 1.1.0")
    assert not version_matches("0.9.0", ">=1.0.0 !=1.1.0")
    assert version_matches("3.0.1", "^1.0.0 || !=3.0.0 >=3.0.0")
    assert not version_matches("3.0.0", "^1.0.0 || !=3.0.0 >=3.0.0")
    assert not version_matches("1.3.0-rc.1", "!=1.2.0")  # a prerelease needs one named
    assert version_matches("1.2.3", "")
    assert not version_matches("", ">=1.0.0")
    assert version_matches("latest", "latest")  # unparsable version: exact string comparison
    assert not version_matches("latest", ">=1.0.0")
    assert version_matches("v1.2.3", "=1.2.3")


def build(registrations: list[dict[str, Any]], unhealthy: list[str] = ()) -> View:  # type: ignore[assignment]
    view = View()
    index = 0
    for body in registrations:
        index += 1
        apply(view, index, events.upsert(from_heartbeat(body), 1000 + index))
    if unhealthy:
        index += 1
        apply(view, index, events.health("unhealthy", list(unhealthy), 5000))
    return view


def resolved(view: View, agent_id: str) -> list[str]:
    return [item["agent_id"] for items in view.resolution(agent_id).values() for item in items]


def test_winner_is_best_tags_then_highest_version_then_smallest_id() -> None:
    consumer = agent_body("consumer", "x", deps=[{"capability": "c", "tags": ["+fast"]}])
    view = build(
        [
            agent_body("p-b", "c", version="2.0.0"),
            agent_body("p-a", "c", version="2.0.0"),
            agent_body("p-old", "c", version="1.9.0", tags=["fast"]),
            consumer,
        ]
    )
    assert resolved(view, "consumer") == ["p-old"]  # +fast outweighs the higher version
    view = build(
        [
            agent_body("p-b", "c", version="2.0.0"),
            agent_body("p-a", "c", version="2.0.0"),
            agent_body("p-c", "c", version="1.0.0"),
            agent_body("consumer", "x", deps=["c"]),
        ]
    )
    assert resolved(view, "consumer") == ["p-a"]


def test_unresolved_entries_keep_declaration_order() -> None:
    view = build(
        [agent_body("p-1", "b"), agent_body("consumer", "x", deps=["a", "b", {"capability": "c"}])]
    )
    items = view.resolution("consumer")["x_fn"]
    assert [(i["capability"], i["status"]) for i in items] == [
        ("a", "unresolved"),
        ("b", "available"),
        ("c", "unresolved"),
    ]
    assert items[0] == {
        "agent_id": "",
        "capability": "a",
        "endpoint": "",
        "function_name": "",
        "status": "unresolved",
    }


def test_self_is_used_only_as_last_resort() -> None:
    me = agent_body("me", "c", deps=["c"])
    assert resolved(build([me]), "me") == ["me"]
    assert resolved(build([me, agent_body("zz-other", "c")]), "me") == ["zz-other"]


# -- properties ---------------------------------------------------------------------------------
#
# An oracle of its own, built from the documented rules (CONTRACT.md "Dependency resolution",
# registry/resolve.py's docstring) without calling registry/resolve.py: versions and constraints
# come from small hand-checked tables, so a wrong constraint check or version order shows up as
# a disagreement instead of being shared by the code and the test.

TAGS = ["a", "b", "c", "d"]
VERSIONS = ["weird", "1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "2.0.0"]
"""Lowest to highest: an unparsable version ranks below every valid one; 1.10.0 above 1.2.0
(numeric, not string, order); a prerelease below its release."""
VERSION_RANK = {version: rank for rank, version in enumerate(VERSIONS)}
SATISFIES: dict[str, set[str]] = {
    "": set(VERSIONS),
    ">=1.1.0": {"1.2.0", "1.10.0", "2.0.0"},
    ">1.2.0 <2.0.0": {"1.10.0"},
    ">=1.0.0, <2.0.0": {"1.0.0", "1.2.0", "1.10.0"},
    "<2.0.0": {"1.0.0", "1.2.0", "1.10.0"},
    "^2.0.0": {"2.0.0"},
    "~1.2.0": {"1.2.0"},
    "!=1.2.0": {"1.0.0", "1.10.0", "2.0.0"},
    "^1.0.0 || ^2.0.0": {"1.0.0", "1.2.0", "1.10.0", "2.0.0"},
    ">=2.0.0-rc.0": {"2.0.0-rc.1", "2.0.0"},
    "weird": {"weird"},
}
"""Which VERSIONS satisfy each constraint, worked out by hand from semver (a prerelease only
matches a constraint naming a prerelease of the same version; an unparsable version or
constraint compares as an exact string)."""


def oracle_tag_score(have: set[str], spec: list[Any]) -> int | None:
    """The documented tag rules: plain tag required (+5), ``+t`` preferred (+10 when present),
    ``-t`` excludes; an OR group needs one alternative present and scores +10 when a present
    alternative is preferred, else +5. None: the provider does not qualify."""
    score = 0
    for tag in spec:
        if isinstance(tag, list):
            present = [alt for alt in tag if alt.removeprefix("+") in have]
            if not present:
                return None
            score += 10 if any(alt.startswith("+") for alt in present) else 5
        elif tag.startswith("-"):
            if tag[1:] in have:
                return None
        elif tag.startswith("+"):
            score += 10 if tag[1:] in have else 0
        elif tag in have:
            score += 5
        else:
            return None
    return score


def oracle_winner(
    tools: list[dict[str, Any]], wanted: dict[str, Any], consumer: str
) -> tuple[str, str] | None:
    """(agent id, function name) the dependency ``wanted`` must resolve to, or None.

    ``tools`` are every registered tool with its agent's id, namespace and health. Eligible:
    healthy, same capability, same namespace, tags qualify, version satisfies. Best: someone
    other than the consumer, then highest tag score, then highest version, then the smallest
    agent id, then the smallest function name.
    """
    ranked = []
    for tool in tools:
        score = oracle_tag_score(set(tool["tags"]), wanted["tags"])
        if (
            tool["healthy"]
            and tool["capability"] == wanted["capability"]
            and tool["namespace"] == wanted["namespace"]
            and score is not None
            and tool["version"] in SATISFIES[wanted["version"]]
        ):
            key = (
                tool["agent_id"] == consumer,
                -score,
                -VERSION_RANK[tool["version"]],
                tool["agent_id"],
                tool["function_name"],
            )
            ranked.append((key, (tool["agent_id"], tool["function_name"])))
    return min(ranked)[1] if ranked else None


tag_specs = st.lists(
    st.one_of(
        st.sampled_from(TAGS),
        st.sampled_from(["+" + t for t in TAGS]),
        st.sampled_from(["-" + t for t in TAGS]),
        st.lists(st.sampled_from(TAGS + ["+" + t for t in TAGS]), min_size=1, max_size=3),
    ),
    max_size=3,
)
tool_specs = st.fixed_dictionaries(
    {
        "capability": st.sampled_from(["c", "c", "other"]),
        "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=4),
        "version": st.sampled_from(VERSIONS),
    }
)
agent_specs = st.lists(
    st.fixed_dictionaries(
        {
            "tools": st.lists(tool_specs, min_size=1, max_size=2),
            "namespace": st.sampled_from(["default", "prod"]),
            "healthy": st.booleans(),
        }
    ),
    min_size=0,
    max_size=7,
)
dependency_specs = st.lists(
    st.fixed_dictionaries(
        {
            "capability": st.sampled_from(["c", "other"]),
            "tags": tag_specs,
            "version": st.sampled_from(sorted(SATISFIES)),
            "namespace": st.sampled_from(["", "default", "prod"]),
        }
    ),
    min_size=1,
    max_size=2,
)
# Ids whose sorted order is unrelated to the order agents are drawn in.
AGENT_IDS = ["kiwi", "apple", "mango", "fig", "banana", "cherry", "date", "lime"]


def registration(agent_id: str, namespace: str, tools: list[dict[str, Any]], **extra: Any) -> Any:
    """A heartbeat body with several tools (function names fn-0, fn-1, ... in tool order)."""
    body = agent_body(agent_id, namespace=namespace, port=9000 + AGENT_IDS.index(agent_id), **extra)
    body["tools"] = [
        {
            "function_name": f"fn-{j}",
            "capability": tool["capability"],
            "version": tool["version"],
            "tags": tool["tags"],
            **({"dependencies": tool["dependencies"]} if "dependencies" in tool else {}),
        }
        for j, tool in enumerate(tools)
    ]
    return body


@settings(max_examples=300, deadline=None)
@given(
    agent_specs,
    dependency_specs,
    st.sampled_from(["default", "prod"]),
    st.one_of(st.none(), tool_specs),
    st.randoms(use_true_random=False),
)
def test_resolution_matches_an_independent_oracle_whatever_the_registration_order(
    agents: list[dict[str, Any]],
    deps: list[dict[str, Any]],
    consumer_namespace: str,
    consumer_provides: dict[str, Any] | None,
    rnd: random.Random,
) -> None:
    """Unresolved exactly when no provider is eligible; otherwise the best by the documented
    order; the same answer whatever order the agents registered in."""
    consumer_id = "lime"  # also a candidate for its own dependency when it provides one
    consumer_tools = [{"capability": "x", "tags": [], "version": "1.0.0", "dependencies": deps}]
    if consumer_provides is not None:
        consumer_tools.append(consumer_provides)
    consumer = {"tools": consumer_tools, "namespace": consumer_namespace, "healthy": True}
    population = dict(zip(AGENT_IDS, agents, strict=False)) | {consumer_id: consumer}
    bodies = [
        registration(agent_id, spec["namespace"], spec["tools"])
        for agent_id, spec in population.items()
    ]
    unhealthy = [agent_id for agent_id, spec in population.items() if not spec["healthy"]]
    tools = [
        {**tool, "agent_id": agent_id, "function_name": f"fn-{j}", **spec}
        for agent_id, spec in population.items()
        for j, tool in enumerate(spec["tools"])
    ]
    view = build(bodies, unhealthy)
    got = view.resolution(consumer_id)["fn-0"]
    assert [item["capability"] for item in got] == [d["capability"] for d in deps]
    for dependency, item in zip(deps, got, strict=True):
        wanted = {**dependency, "namespace": dependency["namespace"] or consumer_namespace}
        expected = oracle_winner(tools, wanted, consumer_id)
        if expected is None:
            assert item["status"] == "unresolved", (wanted, item)
            assert (item["agent_id"], item["function_name"], item["endpoint"]) == ("", "", "")
        else:
            assert item["status"] == "available", (wanted, expected)
            assert (item["agent_id"], item["function_name"]) == expected, wanted
            port = 9000 + AGENT_IDS.index(expected[0])
            assert item["endpoint"] == f"http://127.0.0.1:{port}"
    # The audit's traced resolution picks the same winner and lists it first.
    for _, specs in view.dependencies(consumer_id):
        for dep in specs:
            candidates = list(view.providers(dep.capability))
            plain = choose(dep, candidates, view.is_healthy, consumer_id, None)
            stages: Stages = []
            traced = choose(dep, candidates, view.is_healthy, consumer_id, stages)
            assert traced == plain
            if traced is not None:
                assert stages[-1]["kept"][0] == stages[-1]["chosen"] == traced.key
    rnd.shuffle(bodies)
    assert build(bodies, unhealthy).resolution(consumer_id) == view.resolution(consumer_id)


identifier = st.one_of(st.integers(0, 12).map(str), st.sampled_from(["alpha", "beta", "rc", "a1"]))
semver = st.builds(
    lambda core, pre, build: (
        ".".join(map(str, core))
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{build}" if build else "")
    ),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    st.lists(identifier, max_size=3),
    st.sampled_from(["", "build.5"]),
)


@settings(max_examples=500, deadline=None)
@given(semver, semver)
def test_version_order_is_semver_precedence(a: str, b: str) -> None:
    """The tuple key orders versions exactly as nodesemver's compare does."""
    expected = nodesemver.make_semver(a, loose=True).compare(nodesemver.make_semver(b, loose=True))
    key_a, key_b = _version_key(a), _version_key(b)
    assert (key_a > key_b) - (key_a < key_b) == expected


@settings(deadline=None)
@given(semver, st.sampled_from(["latest", "not-a-version", "1.x.y"]))
def test_unparsable_versions_rank_below_every_valid_one(valid: str, junk: str) -> None:
    assert _parse_version(junk) is None
    assert _version_key(junk) < _version_key(valid)
