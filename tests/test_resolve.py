"""Dependency resolution: the Go registry's rules, and properties that must always hold."""

from __future__ import annotations

import random
from typing import Any

import nodesemver
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import events
from registry.registration import from_heartbeat
from registry.resolve import Dependency, _parse_version, _version_key, tag_score, version_matches
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

TAGS = ["a", "b", "c", "d"]
tag_specs = st.lists(
    st.one_of(
        st.sampled_from(TAGS),
        st.sampled_from(["+" + t for t in TAGS]),
        st.sampled_from(["-" + t for t in TAGS]),
        st.lists(st.sampled_from(TAGS + ["+" + t for t in TAGS]), min_size=1, max_size=3),
    ),
    max_size=3,
)
providers = st.lists(
    st.fixed_dictionaries(
        {
            "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=4),
            "version": st.sampled_from(["1.0.0", "1.2.0", "2.0.0", "2.0.0-rc.1", "weird"]),
            "namespace": st.sampled_from(["default", "prod"]),
            "healthy": st.booleans(),
        }
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(
    providers,
    tag_specs,
    st.sampled_from(["", ">=1.1.0", "^2.0.0", "weird"]),
    st.sampled_from(["default", "prod"]),
    st.randoms(use_true_random=False),
)
def test_resolution_never_breaks_the_rules_and_ignores_registration_order(
    specs: list[dict[str, Any]],
    tags: list[Any],
    version: str,
    namespace: str,
    rnd: random.Random,
) -> None:
    bodies = [
        agent_body(f"p-{i}", "c", tags=s["tags"], version=s["version"], namespace=s["namespace"])
        for i, s in enumerate(specs)
    ]
    unhealthy = [f"p-{i}" for i, s in enumerate(specs) if not s["healthy"]]
    consumer = agent_body(
        "consumer",
        "x",
        namespace=namespace,
        deps=[{"capability": "c", "tags": tags, "version": version}],
    )
    view = build([*bodies, consumer], unhealthy)
    winner = view.resolution("consumer")["x_fn"][0]
    if winner["status"] == "available":
        chosen = next(s for i, s in enumerate(specs) if f"p-{i}" == winner["agent_id"])
        assert chosen["healthy"]
        assert chosen["namespace"] == namespace
        assert tag_score(frozenset(chosen["tags"]), dep(*tags)) is not None
        for tag in tags:
            if isinstance(tag, str) and tag.startswith("-"):
                assert tag[1:] not in chosen["tags"]
        assert version_matches(chosen["version"], version)
    shuffled = bodies[:]
    rnd.shuffle(shuffled)
    again = build([consumer, *shuffled], unhealthy)
    assert again.resolution("consumer") == view.resolution("consumer")


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


@settings(max_examples=500)
@given(semver, semver)
def test_version_order_is_semver_precedence(a: str, b: str) -> None:
    """The tuple key orders versions exactly as nodesemver's compare does."""
    expected = nodesemver.make_semver(a, loose=True).compare(nodesemver.make_semver(b, loose=True))
    key_a, key_b = _version_key(a), _version_key(b)
    assert (key_a > key_b) - (key_a < key_b) == expected


@given(semver, st.sampled_from(["latest", "not-a-version", "1.x.y"]))
def test_unparsable_versions_rank_below_every_valid_one(valid: str, junk: str) -> None:
    assert _parse_version(junk) is None
    assert _version_key(junk) < _version_key(valid)
