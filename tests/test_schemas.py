"""Schema-aware resolution and the schema store: the Go registry's schema_match.go rules, the
store's lifecycle in the view, and GET /schemas."""

from __future__ import annotations

from typing import Any

import pytest

from registry import events, registration
from registry.registration import InvalidRegistration
from registry.schemas import Expected, admits, incompatibilities
from registry.view import View, apply
from tests.conftest import Api

pytestmark = pytest.mark.storages("lmdb", "postgresql")

PERSON = {
    "properties": {"age": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["age", "name"],
    "type": "object",
}
NAME_ONLY = {"properties": {"name": {"type": "string"}}, "required": ["name"], "type": "object"}


def h(char: str) -> str:
    return "sha256:" + char * 64


def test_subset_needs_each_required_field_with_a_compatible_type() -> None:
    assert incompatibilities("", NAME_ONLY, PERSON) == []  # extra producer fields are fine
    assert incompatibilities("", PERSON, NAME_ONLY) == [
        {"path": "age", "kind": "missing_field", "field": "age"}
    ]
    number = {"type": "object", "properties": {"age": {"type": "number"}}, "required": ["age"]}
    assert incompatibilities("", number, PERSON) == []  # integer serves number
    assert incompatibilities("", PERSON, number) == [
        {
            "path": "age",
            "kind": "type_mismatch",
            "consumer_type": "integer",
            "producer_type": "number",
        },
        {"path": "name", "kind": "missing_field", "field": "name"},
    ]
    # Each consumer alternative needs a producer type; no type on either side is "anything".
    assert not incompatibilities("", {"type": ["string", "null"]}, {"type": ["null", "string"]})
    assert incompatibilities("", {"type": ["string", "null"]}, {"type": "string"})
    assert not incompatibilities("", {"type": "string"}, {})
    # Only required fields count; a required field without a declared schema needs only to exist.
    assert not incompatibilities("", {"properties": {"x": {"type": "string"}}}, {})
    assert not incompatibilities("", {"required": ["name"]}, NAME_ONLY)


def test_subset_recurses_into_nested_objects_and_array_items_and_lists_every_reason() -> None:
    wanted = {
        "type": "object",
        "properties": {
            "address": {"type": "object", "properties": {"city": {}}, "required": ["city"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "scores": {"type": "array", "items": {"type": "number"}},
        },
        "required": ["address", "tags", "scores"],
    }
    offered = {
        "type": "object",
        "properties": {
            "address": {"type": "string", "properties": {}},
            "tags": {"type": "array"},
            "scores": {"type": "array", "items": {"type": "integer"}},
        },
    }
    assert incompatibilities("", wanted, offered) == [
        {
            "path": "address",
            "kind": "type_mismatch",
            "consumer_type": "object",
            "producer_type": "string",
        },
        {"path": "address.city", "kind": "missing_field", "field": "city"},
        {"path": "tags.[]", "kind": "missing_items_schema"},
    ]


def tool(output: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if output is None:
        return {}
    return {"outputSchemaHash": output[0], "outputSchemaCanonical": output[1]}


@pytest.mark.parametrize(
    ("mode", "expected", "offered", "admitted"),
    [
        ("subset", (h("e"), NAME_ONLY), (h("a"), PERSON), True),
        ("subset", (h("e"), PERSON), (h("b"), NAME_ONLY), False),
        ("subset", (h("b"), PERSON), (h("b"), NAME_ONLY), True),  # equal hashes: no diff
        ("subset", (h("e"), None), (h("b"), NAME_ONLY), True),  # nothing expected
        ("subset", (h("e"), PERSON), None, True),  # no published schema: kept
        ("strict", (h("a"), PERSON), (h("a"), PERSON), True),
        ("strict", (h("e"), NAME_ONLY), (h("a"), PERSON), False),  # compatible, not equal
        ("strict", (h("a"), PERSON), None, False),
        ("fuzzy", (h("e"), PERSON), (h("b"), NAME_ONLY), False),  # unknown mode: subset
        ("fuzzy", (h("e"), NAME_ONLY), (h("a"), PERSON), True),
    ],
)
def test_the_schema_stage(
    mode: str,
    expected: tuple[str, dict[str, Any] | None],
    offered: tuple[str, dict[str, Any]] | None,
    admitted: bool,
) -> None:
    spec = {"matchMode": mode, "expectedSchemaHash": expected[0]}
    if expected[1] is not None:
        spec["expectedSchemaCanonical"] = expected[1]
    assert admits(Expected.parse(spec), tool(offered)) is admitted


def test_no_match_mode_no_check_and_a_hash_counts_only_with_its_canonical_form() -> None:
    assert Expected.parse({"expectedSchemaHash": h("a"), "expectedSchemaCanonical": PERSON}) is None
    assert Expected.parse({"matchMode": ""}) is None
    strict = Expected.parse({"matchMode": "strict", "expectedSchemaHash": h("a")})
    assert not admits(strict, {"outputSchemaHash": h("a")})  # a hash alone is not published
    assert admits(strict, {"outputSchemaHash": h("a"), "outputSchemaCanonical": {}})


def producer(agent_id: str, version: str, output: tuple[str, dict[str, Any]] | None) -> Any:
    body = {
        "agent_id": agent_id,
        "http_host": "127.0.0.1",
        "http_port": 9000,
        "runtime": "typescript" if agent_id == "pb" else "python",
        "tools": [{"function_name": "get", "capability": "person", "version": version}],
    }
    body["tools"][0] |= tool(output)
    return body


def consumer(agent_id: str, **dep: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "tools": [
            {
                "function_name": "use",
                "capability": f"use-{agent_id}",
                "dependencies": [{"capability": "person", **dep}],
            }
        ],
    }


class Log:
    def __init__(self) -> None:
        self.view = View()
        self.index = 0

    def apply(self, event: events.Event) -> None:
        self.index += 1
        apply(self.view, self.index, event)

    def register(self, body: dict[str, Any], ts_ms: int = 1000) -> None:
        self.apply(events.upsert(registration.from_heartbeat(body), ts_ms))

    def chosen(self, agent_id: str) -> str:
        return str(self.view.resolution(agent_id)["use"][0]["agent_id"])


def test_resolution_takes_only_compatible_providers_and_follows_them() -> None:
    log = Log()
    log.register(producer("pa", "1.0.0", (h("a"), PERSON)))
    log.register(producer("pb", "2.0.0", (h("b"), NAME_ONLY)))
    log.register(consumer("c", matchMode="subset", expectedSchemaCanonical=PERSON))
    log.register(consumer("any"))
    log.register(consumer("s", matchMode="strict", expectedSchemaHash=h("b")))
    assert (log.chosen("c"), log.chosen("any"), log.chosen("s")) == ("pa", "pb", "pb")
    # pb's output grows to a person: now compatible, and the higher version wins.
    log.register(producer("pb", "2.0.0", (h("c"), PERSON)))
    assert log.view.resolution_changed("c") and log.view.resolution_changed("s")
    assert (log.chosen("c"), log.chosen("s")) == ("pb", "")
    assert not log.view.resolution_changed("any")


def test_the_store_keeps_the_agents_schemas_and_drops_what_none_carries() -> None:
    log = Log()
    log.register(producer("pa", "1.0.0", (h("a"), PERSON)), ts_ms=1000)
    log.register(producer("pb", "2.0.0", (h("b"), NAME_ONLY)), ts_ms=2000)
    log.register(producer("pc", "2.0.0", (h("a"), NAME_ONLY)), ts_ms=3000)  # same hash
    store = log.view.schemas
    listed = [(e.hash, e.runtime_origin, e.created_ms) for e in store.newest_first()]
    assert listed == [(h("b"), "typescript", 2000), (h("a"), "python", 1000)]
    assert store.entries[h("a")].canonical == PERSON  # the first canonical form is kept
    log.apply(events.remove("pa", 4000))
    assert store.entries[h("a")].created_ms == 1000  # pc still carries it
    log.apply(events.remove("pc", 5000))
    log.register(producer("pb", "2.0.0", None), ts_ms=6000)
    assert store.entries == {}
    log.register(producer("pa", "1.0.0", (h("a"), PERSON)), ts_ms=7000)
    assert [(e.hash, e.created_ms) for e in store.newest_first()] == [(h("a"), 7000)]


def test_input_and_output_schemas_of_one_registration_list_later_first() -> None:
    body = producer("pa", "1.0.0", (h("a"), PERSON))
    body["tools"][0] |= {"inputSchemaHash": h("9"), "inputSchemaCanonical": {"type": "object"}}
    body["tools"].append(
        {
            "function_name": "g",
            "capability": "g",
            "outputSchemaHash": h("b"),
            "outputSchemaCanonical": NAME_ONLY,
        }
    )
    log = Log()
    log.register(body)
    assert [e.hash for e in log.view.schemas.newest_first()] == [h("b"), h("a"), h("9")]


def test_snapshots_keep_when_each_schema_arrived_and_load_older_ones() -> None:
    log = Log()
    log.register(producer("pa", "1.0.0", (h("a"), PERSON)), ts_ms=1000)
    log.register(producer("pb", "2.0.0", (h("b"), NAME_ONLY)), ts_ms=2000)
    log.register(producer("pa", "1.5.0", (h("a"), PERSON)), ts_ms=3000)
    state = log.view.to_state()
    restored = View.from_state(state)
    assert restored.digest() == log.view.digest()
    assert [e.to_state() for e in restored.schemas.newest_first()] == [
        e.to_state() for e in log.view.schemas.newest_first()
    ]
    del state["schemas"]  # written before schemas were kept: each counts from its agent
    older = View.from_state(state)
    assert [(e.hash, e.created_ms) for e in older.schemas.newest_first()] == [
        (h("b"), 2000),
        (h("a"), 1000),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"outputSchemaHash": 5},
        {"outputSchemaCanonical": [1]},
        {"inputSchemaCanonical": "x"},
        {"schemaWarnings": [1]},
        {"outputSchema": 3},
        {"dependencies": [{"capability": "p", "matchMode": 5}]},
        {"dependencies": [{"capability": "p", "expectedSchemaCanonical": [1]}]},
        {"dependencies": [{"capability": "p", "expectedSchemaHash": 5}]},
    ],
)
def test_schema_fields_the_go_registry_cannot_decode_are_bad_input(bad: dict[str, Any]) -> None:
    body = {"agent_id": "x", "tools": [{"function_name": "f", "capability": "c", **bad}]}
    with pytest.raises(InvalidRegistration):
        registration.from_heartbeat(body)


async def test_get_schemas_lists_newest_first_and_serves_each(api: Api) -> None:
    for body in (producer("pa", "1.0.0", (h("a"), PERSON)), producer("pb", "2", (h("b"), {}))):
        async with api.client.post("/heartbeat", json=body) as resp:
            assert resp.status == 200
    async with api.client.get("/schemas") as resp:
        listed = await resp.json()
    assert listed["count"] == 2 and [s["hash"] for s in listed["schemas"]] == [h("b"), h("a")]
    assert set(listed["schemas"][0]) == {"canonical", "created_at", "hash", "runtime_origin"}
    for limit, count in (("1", 1), ("0", 1), ("5000", 2)):  # clamped, as the Go registry does
        async with api.client.get("/schemas", params={"limit": limit}) as resp:
            assert (await resp.json())["count"] == count
    async with api.client.get("/schemas", params={"limit": "x"}) as resp:
        assert resp.status == 400
    async with api.client.get(f"/schemas/{h('a')}") as resp:
        assert (await resp.json())["canonical"] == PERSON
    async with api.client.get(f"/schemas/{h('z')}") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == f"schema not found: {h('z')}"
