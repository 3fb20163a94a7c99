"""LLM tool lists and provider choice (registry.llm) on real views, and through the HTTP API.

The Go registry's answers for the same registrations are compared in tests/compat/test_llm.py;
these pin the rules one at a time, the caching, and what HEAD /heartbeat makes of a change.
"""

from __future__ import annotations

from typing import Any

import pytest

from registry import events, registration
from registry.api.render import agent_info_from_log
from registry.registration import InvalidRegistration
from registry.view import UNHEALTHY, View, apply
from tests.conftest import Api

pytestmark = pytest.mark.storages("lmdb", "postgresql")

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def tool(
    function_name: str,
    capability: str,
    version: str = "1.0.0",
    tags: list[str] | None = None,
    schema: dict[str, Any] | None = SCHEMA,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "function_name": function_name,
        "capability": capability,
        "version": version,
        "tags": tags or [],
        **extra,
    }
    if schema is not None:
        body["inputSchema"] = schema
    return body


def agent(agent_id: str, *tools: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "http_host": "127.0.0.1",
        "http_port": 9000,
        "tools": list(tools),
        **extra,
    }


def llm_agent(agent_id: str = "llm", **functions: dict[str, Any]) -> dict[str, Any]:
    """An agent whose functions carry the given ``llm_filter``/``llm_provider`` declarations."""
    return agent(
        agent_id,
        *(tool(name, f"{name}_cap", schema=None, **spec) for name, spec in functions.items()),
    )


class Mesh:
    """A view fed through the log's own ``apply``, as every replica builds it."""

    def __init__(self) -> None:
        self.view = View()
        self.index = 0

    def _apply(self, event: events.Event) -> None:
        self.index += 1
        apply(self.view, self.index, event)

    def register(self, body: dict[str, Any]) -> None:
        self._apply(events.upsert(registration.from_heartbeat(body), 0))

    def remove(self, agent_id: str) -> None:
        self._apply(events.remove(agent_id, 0))

    def health(self, status: str, *agent_ids: str) -> None:
        self._apply(events.health(status, list(agent_ids), 0))

    def names(self, agent_id: str, function_name: str) -> list[str]:
        tools = self.view.llm_answer(agent_id).tools[function_name]
        return [f"{item['endpoint'].rsplit(':', 1)[-1]}/{item['name']}" for item in tools]

    def provider(self, agent_id: str, function_name: str) -> str | None:
        chosen = self.view.llm_answer(agent_id).providers.get(function_name)
        return None if chosen is None else f"{chosen['agent_id']}/{chosen['name']}"


def mesh_of(*bodies: dict[str, Any]) -> Mesh:
    mesh = Mesh()
    for body in bodies:
        mesh.register(body)
    return mesh


def filtered(*items: Any, mode: str | None = None) -> dict[str, Any]:
    llm_filter: dict[str, Any] = {"filter": list(items)}
    if mode is not None:
        llm_filter["filter_mode"] = mode
    return {"llm_filter": llm_filter}


def port(agent_id: str, *tools: dict[str, Any], at: int) -> dict[str, Any]:
    return {**agent(agent_id, *tools), "http_port": at}


PROVIDERS = (
    port("a", tool("search", "web", "1.0.0", ["fast"]), tool("read", "pdf", "1.2.0"), at=1),
    port("b", tool("search2", "web", "2.0.0", ["slow", "gpu"]), tool("ocr", "pdf", "2.1.0"), at=2),
    port("c", tool("search", "web", "1.5.0", ["fast", "gpu"]), tool("calc", "math"), at=3),
)


def test_all_mode_lists_each_items_matches_in_mesh_order_first_name_wins() -> None:
    mesh = mesh_of(*PROVIDERS, llm_agent(chat=filtered("pdf", "web")))
    # pdf's tools first (the item order), then web's; c's "search" loses to a's (same name).
    assert mesh.names("llm", "chat") == ["1/read", "2/ocr", "1/search", "2/search2"]


def test_tagged_item_ranks_by_tag_score_and_keeps_mesh_order_among_equals() -> None:
    mesh = mesh_of(
        *PROVIDERS,
        llm_agent(
            pref=filtered({"capability": "web", "tags": ["+gpu"]}),
            need=filtered({"capability": "web", "tags": ["fast", "-slow"]}),
            any_cap=filtered({"tags": ["gpu"]}),
            version=filtered({"capability": "web", "version": ">=1.5.0"}),
            nested=filtered({"capability": "web", "tags": [["slow", "fast"]]}),
        ),
    )
    assert mesh.names("llm", "pref") == ["2/search2", "3/search"]  # a's "search" comes last
    assert mesh.names("llm", "need") == ["1/search"]  # c's "search" is a duplicate name
    assert mesh.names("llm", "any_cap") == ["2/search2", "3/search"]
    assert mesh.names("llm", "version") == ["2/search2", "3/search"]
    # Go keeps only string tags of a filter: an OR group is no constraint at all.
    assert mesh.names("llm", "nested") == ["1/search", "2/search2"]


def test_best_match_keeps_one_tool_per_capability_highest_version_then_more_tags() -> None:
    mesh = mesh_of(
        *PROVIDERS,
        port("d", tool("ocr_v", "pdf", "2.1.0", ["x", "y"]), tool("odd", "math", "latest"), at=4),
        llm_agent(best=filtered("web", "pdf", "math", mode="best_match")),
    )
    # web: b's 2.0.0; pdf: d's 2.1.0 ties b's 2.1.0 and has more tags; math: "latest" is not
    # semver, so neither is newer and c's calc (first) keeps its place (equal tag counts).
    assert mesh.names("llm", "best") == ["2/search2", "4/ocr_v", "3/calc"]


def test_wildcard_mode_offers_every_other_agents_tools_and_ignores_the_filter() -> None:
    own = agent(
        "llm", tool("mine", "mine"), tool("chat", "chat", schema=None, **filtered(mode="*"))
    )
    star_item = agent("llm2", tool("mine2", "mine2"), tool("chat", "c", **filtered("*")))
    mesh = mesh_of(*PROVIDERS, own, star_item)
    everyone = ["1/search", "1/read", "2/search2", "2/ocr", "3/calc"]
    assert mesh.names("llm", "chat") == [*everyone, "9000/mine2", "9000/chat"]
    # The "*" item (mode all) sees the agent's own tools too, as in the Go registry.
    assert mesh.names("llm2", "chat") == [*everyone, "9000/mine", "9000/mine2", "9000/chat"]


def test_only_healthy_agents_tools_with_a_schema_are_offered() -> None:
    mesh = mesh_of(
        *PROVIDERS,
        port(
            "e", tool("plain", "pdf", "9.0.0", schema=None), tool("empty", "pdf", schema={}), at=5
        ),
        llm_agent(chat=filtered("pdf")),
    )
    assert mesh.names("llm", "chat") == ["1/read", "2/ocr", "5/empty"]
    mesh.health(UNHEALTHY, "b")
    assert mesh.names("llm", "chat") == ["1/read", "5/empty"]


def test_a_filter_matching_nothing_still_lists_the_function() -> None:
    mesh = mesh_of(*PROVIDERS, llm_agent(chat=filtered("nothing"), alone=filtered()))
    assert mesh.view.llm_answer("llm").tools == {"chat": [], "alone": []}


def test_tool_items_have_the_go_registrys_fields_and_endpoints() -> None:
    wildcard = {**agent("w", tool("t", "web", description="Finds")), "http_host": "0.0.0.0"}
    stdio = {**agent("s", tool("u", "web")), "http_port": 0}
    mesh = mesh_of(wildcard, stdio, llm_agent(chat=filtered("web")))
    first, second = mesh.view.llm_answer("llm").tools["chat"]
    assert first == {
        "capability": "web",
        "description": "Finds",
        "endpoint": "http://localhost:9000",
        "inputSchema": SCHEMA,
        "name": "t",
        "tags": [],
        "version": "1.0.0",
    }
    assert second["endpoint"] == "stdio://s" and second["description"] == ""


LLMS = (
    agent(
        "claude",
        tool("claude_chat", "llm", "1.0.0", ["claude", "sonnet"], kwargs={"vendor": "anthropic"}),
    ),
    agent("gpt", tool("gpt_chat", "llm", "2.0.0", ["openai"], kwargs={"vendor": "openai", "t": 1})),
    agent("local", tool("local_chat", "llm", "1.5.0", ["claude", "local"])),
    agent("bare", tool("bare_chat", "llm", "9.0.0", schema=None)),
)


def delegating(**specs: dict[str, Any]) -> dict[str, Any]:
    return llm_agent(**{name: {"llm_provider": spec} for name, spec in specs.items()})


@pytest.mark.parametrize(
    ("spec", "chosen"),
    [
        ({"tags": ["claude"]}, "local/local_chat"),  # equal scores: the higher version
        ({"tags": ["+openai"]}, "gpt/gpt_chat"),
        ({"tags": ["-openai", "+sonnet"]}, "claude/claude_chat"),
        ({"tags": ["+claude"], "version": "<1.5.0"}, "claude/claude_chat"),
        ({"tags": [], "version": "", "namespace": "default"}, "gpt/gpt_chat"),  # SDK defaults
        ({"tags": ["mistral"]}, None),
        ({"namespace": "elsewhere"}, None),  # a provider is looked for in its namespace only
    ],
)
def test_provider_is_chosen_by_the_dependency_rules(spec: dict[str, Any], chosen: str) -> None:
    mesh = mesh_of(*LLMS, delegating(chat={"capability": "llm", **spec}))
    # "bare" has the highest version but no input schema: never a provider.
    assert mesh.provider("llm", "chat") == chosen


def test_provider_item_has_the_go_registrys_shape() -> None:
    mesh = mesh_of(*LLMS, delegating(a={"capability": "llm", "tags": ["+openai"]}))
    mesh.register(delegating(a={"capability": "llm", "tags": ["local"]}) | {"agent_id": "llm2"})
    assert mesh.view.llm_answer("llm").providers["a"] == {
        "agent_id": "gpt",
        "capability": "llm",
        "endpoint": "http://127.0.0.1:9000",
        "kwargs": {"vendor": "openai", "t": 1},
        "name": "gpt_chat",
        "status": "available",
        "tags": ["openai"],
        "vendor": "openai",
        "version": "2.0.0",
    }
    local = mesh.view.llm_answer("llm2").providers["a"]
    assert local["vendor"] == "unknown" and "kwargs" not in local


def test_own_provider_is_used_only_when_no_other_agent_qualifies() -> None:
    own = agent(
        "llm", tool("mine", "llm", "5.0.0"), tool("chat", "c", llm_provider={"capability": "llm"})
    )
    mesh = mesh_of(*LLMS, own)
    assert mesh.provider("llm", "chat") == "gpt/gpt_chat"
    for other in ("claude", "gpt", "local"):
        mesh.remove(other)
    assert mesh.provider("llm", "chat") == "llm/mine"


def test_answers_are_cached_until_a_capability_they_look_at_changes() -> None:
    mesh = mesh_of(
        *PROVIDERS,
        *LLMS,
        llm_agent(chat=filtered("pdf"), via={"llm_provider": {"capability": "llm"}}),
    )
    first = mesh.view.llm_answer("llm")
    mesh.register(agent("z", tool("other", "unrelated")))
    assert mesh.view.llm_answer("llm") is first
    a = PROVIDERS[0]
    # Only a description changes: no dependency would notice, an LLM must.
    mesh.register(a | {"tools": [a["tools"][0], a["tools"][1] | {"description": "new"}]})
    second = mesh.view.llm_answer("llm")
    assert second is not first and second.digest != first.digest
    assert second.tools["chat"][0]["description"] == "new"
    mesh.remove("gpt")
    assert mesh.provider("llm", "via") == "local/local_chat"


def test_a_wildcard_answer_changes_with_any_capability() -> None:
    mesh = mesh_of(*PROVIDERS, llm_agent(chat=filtered(mode="*")))
    first = mesh.view.llm_answer("llm")
    mesh.register(agent("z", tool("other", "unrelated")))
    assert mesh.view.llm_answer("llm") is not first
    assert mesh.names("llm", "chat")[-1] == "9000/other"


def test_head_sees_an_llm_change_only_when_this_agents_answer_changed() -> None:
    mesh = mesh_of(
        *PROVIDERS,
        *LLMS,
        llm_agent(chat=filtered("pdf")),
        delegating(d={"capability": "llm"}) | {"agent_id": "d"},
    )
    view = mesh.view
    assert not view.resolution_changed("llm") and not view.resolution_changed("d")
    mesh.register(agent("z", tool("other", "unrelated")))
    assert not view.resolution_changed("llm") and not view.resolution_changed("d")
    mesh.remove("b")  # b's ocr was in llm's pdf list
    assert view.resolution_changed("llm") and not view.resolution_changed("d")
    mesh.register(llm_agent(chat=filtered("pdf")))  # the full POST that follows a 202
    assert not view.resolution_changed("llm")
    mesh.health(UNHEALTHY, "gpt")  # d's provider
    assert view.resolution_changed("d") and not view.resolution_changed("llm")


def test_snapshots_keep_what_was_delivered_and_load_older_ones() -> None:
    mesh = mesh_of(*PROVIDERS, llm_agent(chat=filtered("pdf")))
    state = mesh.view.to_state()
    restored = View.from_state(state)
    assert restored.agents["llm"].llm_delivered == mesh.view.agents["llm"].llm_delivered != ""
    assert restored.llm_answer("llm") == mesh.view.llm_answer("llm")
    assert not restored.resolution_changed("llm")
    for item in state["agents"]:
        del item[6:]  # the layout before LLM answers (and rotations) were recorded
    older = View.from_state(state)
    assert older.agents["a"].llm_delivered == "" and not older.resolution_changed("a")
    assert older.resolution_changed("llm")  # one 202, then the agent's POST records it


@pytest.mark.parametrize(
    "bad",
    [
        {"llm_filter": "web"},
        {"llm_filter": []},
        {"llm_provider": "llm"},
        {"llm_provider": {"capability": 3}},
        {"llm_provider": {"capability": "llm", "tags": "a"}},
        {"llm_provider": {"capability": "llm", "tags": [["a", "b"]]}},
    ],
)
def test_declarations_the_go_registry_cannot_decode_are_bad_input(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRegistration):
        registration.from_heartbeat(agent("x", tool("f", "c", **bad)))


ODD = {
    "no_list": {"llm_filter": {"filter": "web"}},
    "no_filter": {"llm_filter": {"filter_mode": "all"}},
    "bad_item": {"llm_filter": {"filter": [3, "web"]}},
    "star_bad_item": {"llm_filter": {"filter": [3], "filter_mode": "*"}},
    "odd_keys": {"llm_filter": {"filter": [{"capability": 3, "tags": "x", "version": 3}]}},
    "odd_mode": {"llm_filter": {"filter": ["math"], "filter_mode": 7}},
    "no_capability": {"llm_provider": {"tags": ["x"]}},
    "empty_capability": {"llm_provider": {"capability": ""}},
}


def test_unusable_declarations_are_ignored_as_the_go_registry_ignores_them() -> None:
    mesh = mesh_of(*PROVIDERS, llm_agent(**ODD))
    answer = mesh.view.llm_answer("llm")
    assert answer.providers == {}
    assert set(answer.tools) == {"star_bad_item", "odd_keys", "odd_mode"}
    assert mesh.names("llm", "odd_keys") == ["1/search", "1/read", "2/search2", "2/ocr", "3/calc"]
    assert mesh.names("llm", "odd_mode") == ["3/calc"]


def test_agent_info_tells_each_filter_item_and_provider_as_the_go_registry_does() -> None:
    """AgentInfo's llm_tool_resolutions / llm_provider_resolutions (StoreLLMToolResolutions):
    per filter item the listed tools of its capability (all of them for tags only), an item
    without either told not at all, available entries before unresolved ones."""
    consumer = llm_agent(
        chat=filtered("pdf", {"tags": ["gpu"]}, "missing"),
        best=filtered("web", mode="best_match"),
        anything=filtered({}),  # lists every tool, told as nothing
        via={"llm_provider": {"capability": "llm", "tags": ["+openai"]}},
        nowhere={"llm_provider": {"capability": "llm", "tags": ["mistral"]}},
    )
    mesh = mesh_of(*PROVIDERS, *LLMS, consumer)
    info = agent_info_from_log(mesh.view, mesh.view.agents["llm"])
    told = [
        (e["function_name"], e["filter_capability"], e.get("provider_agent_id"), e.get("mcp_tool"))
        for e in info["llm_tool_resolutions"]
    ]
    assert told == [
        ("chat", "pdf", "a", "read"),
        ("chat", "pdf", "b", "ocr"),
        ("chat", "", "a", "read"),
        ("chat", "", "b", "ocr"),
        ("chat", "", "b", "search2"),
        ("chat", "", "c", "search"),
        ("best", "web", "b", "search2"),
        ("chat", "missing", None, None),
    ]
    assert info["llm_tool_resolutions"][2] == {
        "endpoint": "http://127.0.0.1:1",
        "filter_capability": "",
        "filter_mode": "all",
        "filter_tags": ["gpu"],
        "function_name": "chat",
        "mcp_tool": "read",
        "provider_agent_id": "a",
        "provider_capability": "pdf",
        "status": "available",
    }
    assert info["llm_tool_resolutions"][-1] == {
        "filter_capability": "missing",
        "filter_mode": "all",
        "function_name": "chat",
        "status": "unresolved",
    }
    assert info["llm_provider_resolutions"] == [
        {
            "endpoint": "http://127.0.0.1:9000",
            "function_name": "via",
            "mcp_tool": "gpt_chat",
            "provider_agent_id": "gpt",
            "required_capability": "llm",
            "required_tags": ["+openai"],
            "status": "available",
        },
        {
            "function_name": "nowhere",
            "required_capability": "llm",
            "required_tags": ["mistral"],
            "status": "unresolved",
        },
    ]
    # Live, like dependency_resolutions: a provider that leaves is gone from the next listing.
    mesh.remove("gpt")
    info = agent_info_from_log(mesh.view, mesh.view.agents["llm"])
    assert [e.get("provider_agent_id") for e in info["llm_provider_resolutions"]] == ["local", None]


def test_apply_never_fails_on_any_logged_declaration() -> None:
    """Registrations logged before these fields were checked reach apply unvalidated."""
    mesh = mesh_of(*PROVIDERS)
    weird: list[Any] = [None, 3, "x", [], {"filter": None}, {"filter": [None, {}]}, {"tags": 5}]
    for n, value in enumerate(weird):
        raw = {"function_name": "f", "capability": "c", "version": "1.0.0", "tags": []}
        raw |= {"llm_filter": value, "llm_provider": value, "inputSchema": value}
        body = {"agent_id": f"w{n}", "http_host": "h", "http_port": 1, "tools": [raw]}
        mesh._apply(events.upsert(body, 0))
        assert mesh.view.llm_answer(f"w{n}").providers == {}


async def test_heartbeat_answers_carry_llm_tools_and_providers_and_head_follows(api: Api) -> None:
    client = api.client

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        resp = await client.post("/heartbeat", json=body)
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    async def head(agent_id: str) -> int:
        return (await client.head(f"/heartbeat/{agent_id}")).status

    plain = await post(PROVIDERS[0])
    assert plain["llm_tools"] == {} and "llm_providers" not in plain
    await post(LLMS[0])
    consumer = llm_agent(chat=filtered("pdf"), via={"llm_provider": {"capability": "llm"}})
    first = await post(consumer)
    assert [t["name"] for t in first["llm_tools"]["chat"]] == ["read"]
    assert first["llm_providers"]["via"]["agent_id"] == "claude"
    assert await head("llm") == 200
    await post(PROVIDERS[1])
    assert await head("llm") == 202
    again = await post(consumer)
    assert [t["name"] for t in again["llm_tools"]["chat"]] == ["read", "ocr"]
    assert await head("llm") == 200
    assert (await client.delete("/agents/claude")).status == 204
    assert await head("llm") == 202
    assert "llm_providers" not in await post(consumer)
    assert await head("llm") == 200
