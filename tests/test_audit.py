"""The dependency-resolution audit (registry/audit.py): which resolutions are recorded, in the
pure view, and that an unchanged full heartbeat whose audit is due still reaches the log.

The traces themselves are compared with the Go registry's in tests/compat/test_audit.py; these
tests pin each recording rule on its own, so that dropping one fails here.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import audit
from registry.events import health, remove, upsert
from registry.registration import from_heartbeat
from registry.resolve import STAGE_LIST_LIMIT
from registry.view import View, apply
from tests.conftest import Api, agent_body

pytestmark = pytest.mark.storages("lmdb", "postgresql")

CONSUMER = "c-1"


class Mesh:
    """A view fed with events, and the audit events the consumer has had recorded."""

    def __init__(self) -> None:
        self.view = View()
        self.index = 0

    def post(self, body: dict[str, Any]) -> None:
        self.index += 1
        apply(self.view, self.index, upsert(from_heartbeat(body), 1000 * self.index))

    def provider(
        self, agent_id: str, version: str = "1.0.0", tags: list[str] | None = None
    ) -> None:
        self.post(agent_body(agent_id, "svc", version=version, tags=tags))

    def consumer(self, **spec: Any) -> None:
        self.post(agent_body(CONSUMER, "use", deps=[{"capability": "svc", **spec}]))

    def leave(self, agent_id: str) -> None:
        self.index += 1
        apply(self.view, self.index, remove(agent_id, 1000 * self.index))

    def health(self, status: str, agent_id: str) -> None:
        self.index += 1
        apply(self.view, self.index, health(status, [agent_id], 1000 * self.index))

    def recorded(self) -> list[tuple[str, str | None, str | None]]:
        """(type, chosen agent, prior_chosen) of each audit event, oldest first."""
        return [
            (
                item["event_type"],
                item["data"].get("chosen", {}).get("agent_id"),
                item["data"].get("prior_chosen"),
            )
            for item in self.view.history
            if item["event_type"] in (audit.RESOLVED, audit.UNRESOLVED)
        ]


def test_a_real_choice_is_recorded_once_while_nothing_changes() -> None:
    mesh = Mesh()
    mesh.provider("p-a", "1.0.0")
    mesh.provider("p-b", "2.0.0")
    mesh.consumer()
    mesh.consumer()  # the same trace again: not recorded twice
    assert mesh.recorded() == [(audit.RESOLVED, "p-b", None)]
    (item,) = [i for i in mesh.view.history if i["event_type"] == audit.RESOLVED]
    assert item["function_name"] == "use_fn"
    assert item["data"]["stages"][-1] == {
        "stage": "tiebreaker",
        "kept": ["p-b:svc_fn", "p-a:svc_fn"],
        "chosen": "p-b:svc_fn",
        "reason": "HighestScoreThenVersion",
    }


def test_a_forced_choice_is_not_recorded_but_its_flip_is() -> None:
    mesh = Mesh()
    mesh.provider("p-a")
    mesh.consumer()
    assert mesh.recorded() == []  # one candidate, no earlier choice: noise
    mesh.leave("p-a")
    mesh.provider("p-b")
    mesh.consumer()  # still one candidate, but not the one chosen last: a flip...
    assert mesh.recorded() == []  # ...only once a choice was recorded
    mesh.provider("p-c")
    mesh.consumer()  # two candidates: recorded
    mesh.leave("p-b")
    mesh.consumer()  # one candidate left, and it is another one: the flip is recorded
    assert mesh.recorded() == [(audit.RESOLVED, "p-b", None), (audit.RESOLVED, "p-c", "p-b")]


def test_failures_are_recorded_when_a_candidate_was_evicted_or_something_was_chosen_before():
    mesh = Mesh()
    mesh.consumer()
    assert mesh.recorded() == []  # no candidate at all: nothing to explain
    mesh.provider("p-a", "1.0.0")
    mesh.consumer(version=">=2.0.0")  # its only candidate evicted: "why is it not wired"
    assert mesh.recorded() == [(audit.UNRESOLVED, None, None)]
    mesh.provider("p-b", "2.0.0")
    mesh.consumer(version=">=2.0.0")  # one candidate after a failure: recorded
    mesh.leave("p-b")
    mesh.leave("p-a")
    mesh.consumer(version=">=2.0.0")  # nobody at all, but p-b was chosen before
    assert mesh.recorded() == [
        (audit.UNRESOLVED, None, None),
        (audit.RESOLVED, "p-b", None),
        (audit.UNRESOLVED, None, "p-b"),
    ]


def test_a_provider_losing_its_health_is_evicted_in_the_health_stage() -> None:
    mesh = Mesh()
    mesh.provider("p-a")
    mesh.provider("p-b", "2.0.0")
    mesh.consumer()
    mesh.health("unhealthy", "p-b")
    mesh.consumer()
    latest = [i for i in mesh.view.history if i["event_type"] == audit.RESOLVED][-1]
    assert latest["data"]["stages"][0] == {
        "stage": "health",
        "kept": ["p-a:svc_fn"],
        "evicted": [
            {"id": "p-b:svc_fn", "reason": "Unhealthy", "details": {"status": "unhealthy"}}
        ],
    }
    assert latest["data"]["prior_chosen"] == "p-b"


def test_a_consumer_that_leaves_takes_its_audit_memory_with_it() -> None:
    mesh = Mesh()
    mesh.provider("p-a")
    mesh.provider("p-b")
    mesh.consumer()
    assert CONSUMER in mesh.view.audits
    mesh.leave(CONSUMER)
    assert CONSUMER not in mesh.view.audits
    mesh.consumer()  # back: its first trace is recorded again, with no prior choice
    assert mesh.recorded()[-1] == (audit.RESOLVED, "p-a", None)


async def test_an_unchanged_full_heartbeat_whose_audit_is_due_is_logged(api: Api) -> None:
    consumer = agent_body(CONSUMER, "use", deps=[{"capability": "svc", "tags": ["x"]}])
    await api.client.post("/heartbeat", json=agent_body("p-a", "svc", tags=["x"]))
    await api.client.post("/heartbeat", json=consumer)
    before = api.log_index
    await api.client.post("/heartbeat", json=consumer)
    assert api.log_index == before  # nothing to record: no entry
    # A second candidate that the tags refuse: the answer stays p-a, the trace changes.
    await api.client.post("/heartbeat", json=agent_body("p-b", "svc", port=9001))
    assert (await api.client.head(f"/heartbeat/{CONSUMER}")).status == 200
    await api.client.post("/heartbeat", json=consumer)
    resp = await api.client.get("/events", params={"type": audit.UNRESOLVED})
    assert (await resp.json())["count"] == 0
    resp = await api.client.get("/events", params={"type": audit.RESOLVED})
    (event,) = (await resp.json())["events"]
    assert event["function_name"] == "use_fn" and event["agent_id"] == CONSUMER
    assert event["data"]["stages"][2]["evicted"][0]["reason"] == "MissingTag"
    logged = api.log_index
    await api.client.post("/heartbeat", json=consumer)
    assert api.log_index == logged  # recorded: not due any more


def test_a_stage_lists_a_bounded_number_of_candidates() -> None:
    mesh = Mesh()
    many = STAGE_LIST_LIMIT + 6
    for n in range(many):
        mesh.provider(f"p-{n:03d}", f"1.0.{n}")
    mesh.consumer()
    (item,) = [i for i in mesh.view.history if i["event_type"] == audit.RESOLVED]
    assert [len(stage["kept"]) for stage in item["data"]["stages"]] == [STAGE_LIST_LIMIT] * 6
    winner = f"p-{many - 1:03d}"  # the highest version, wherever it is listed
    assert item["data"]["chosen"]["agent_id"] == winner
    assert item["data"]["stages"][-1]["kept"][0] == f"{winner}:svc_fn"


# Trace-shaped values as the resolver builds them: strings (any character: agent and function
# names are the agents' own), the dependency index, and a schema stage whose evictions carry
# the agents' own schema values (any JSON, floats and big ints included).
_text = st.text(max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_evicted = st.fixed_dictionaries(
    {"id": _text, "reason": _text}, optional={"details": st.dictionaries(_text, _text, max_size=2)}
)
_stage = st.fixed_dictionaries(
    {"stage": st.sampled_from(["health", "tags", "version"]), "kept": st.lists(_text, max_size=4)},
    optional={"evicted": st.lists(_evicted, max_size=3)},
)
_schema_stage = st.fixed_dictionaries(
    {
        "stage": st.just("schema"),
        "kept": st.lists(_text, max_size=3),
        "evicted": st.lists(
            st.fixed_dictionaries(
                {"id": _text, "reason": st.just("SchemaIncompatible"), "details": _json}
            ),
            min_size=1,
            max_size=2,
        ),
    }
)
_trace = st.fixed_dictionaries(
    {
        "consumer": _text,
        "dep_index": st.integers(min_value=0, max_value=64),
        "spec": st.dictionaries(_text, _text | st.lists(_text, max_size=3), max_size=4),
        "stages": st.lists(_stage | _schema_stage, max_size=6),
    },
    optional={"chosen": st.dictionaries(_text, _text, max_size=3)},
)


@settings(max_examples=400, deadline=None)
@given(_trace)
def test_the_canonical_text_of_a_trace_is_the_json_modules_byte_for_byte(traced: Any) -> None:
    """The hash's text must not change with how it is computed (a replica on another version
    would record audit events the others do not): orjson's fast path, taken for most traces,
    writes exactly what ``json.dumps`` does, and the traces it cannot write so fall back."""
    expected = json.dumps(traced, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert audit.canonical_json(traced) == expected


@pytest.mark.parametrize(
    "odd",
    [
        {1: "int key"},
        {"big": 2**70},
        {"set": {"a"}},
        {"deep": functools.reduce(lambda x, _: [x], range(300), [])},
    ],
)
def test_a_trace_orjson_refuses_takes_the_json_module(odd: dict[Any, Any]) -> None:
    """No trace holds these today; one that did must still hash as json writes it, not raise
    while every replica applies the event."""
    traced = {"consumer": "c", "dep_index": 0, "spec": odd, "stages": []}
    expected = json.dumps(traced, sort_keys=True, separators=(",", ":"), default=str).encode()
    assert audit.canonical_json(traced) == expected
