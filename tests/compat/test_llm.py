"""``llm_tools`` and ``llm_providers`` side by side with the Go registry (npm @mcpmesh/cli 3.7).

The same registrations go to the Go registry binary and to ours (one node, and three
replicas written and read through different replicas, as a Raft cluster and in PostgreSQL
mode: the ``our_urls`` fixture, which tests/compat's other Go comparisons share): LLM agents
in the three filter modes, filters by name, ``"*"`` and ``{capability, tags, version}``,
provider delegation with tag operators and versions, malformed declarations; then providers
leave (DELETE) and come back (re-register). Every heartbeat answer's ``llm_tools`` and
``llm_providers``, and every agent's ``llm_tool_resolutions`` and ``llm_provider_resolutions``
in ``GET /agents`` after each round, must be identical, except for the differences
docs/protocol.md lists, which are asserted here as what each registry does.

The LLM agents' own functions have no input schema, so no tool list contains them: the Go
registry re-creates an agent's tools at every full heartbeat, moving them to the end of the
mesh's order, and ours (which appends nothing for an unchanged heartbeat) keeps them in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat.test_meshctl_and_go import go_registry, mesh_cli  # noqa: F401 (fixtures)
from tests.pg_replicas import three_replicas
from tests.processes import Registry
from tests.test_cluster import all_ready, until
from tests.test_llm import ODD, tool
from tests.timing import scaled

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def agent(agent_id: str, port: int, *tools: dict[str, Any], host: str = "127.0.0.1") -> Any:
    return {"agent_id": agent_id, "name": agent_id, "http_host": host, "http_port": port,
            "tools": list(tools)}  # fmt: skip


def tools_of(item: list[Any], mode: str = "all") -> dict[str, Any]:
    return {"llm_filter": {"filter": item, "filter_mode": mode}}


def provider(tags: list[str], version: str = "", namespace: str = "default") -> dict[str, Any]:
    """An ``llm_provider`` as the Python SDK sends it (every key present)."""
    spec = {"capability": "llm", "tags": tags, "version": version, "namespace": namespace}
    return {"llm_provider": spec}


def llm_agent(agent_id: str, port: int, **functions: dict[str, Any]) -> dict[str, Any]:
    return agent(
        agent_id,
        port,
        *(
            tool(name, f"{agent_id}-{name}", schema=None, **spec)
            for name, spec in functions.items()
        ),
    )


PROVIDERS = {
    "p-a": agent(
        "p-a",
        9001,
        tool("search_web", "web_search", "1.0.0", ["fast", "python"], description="Search"),
        tool("read_pdf", "pdf", "1.2.0", ["document"], kwargs={"timeout": 30}),
        tool("internal", "web_search", "3.0.0", schema=None),  # no schema: never offered
    ),
    "p-b": agent(
        "p-b",
        9002,
        tool("search_web2", "web_search", "2.0.0", ["slow", "typescript"]),
        tool("ocr", "pdf", "2.1.0", ["document", "gpu"]),
    ),
    "p-c": agent(
        "p-c",
        9003,
        tool("search_web", "web_search", "1.5.0", ["fast", "typescript", "gpu"]),
        tool("calc", "math", "1.0.0"),
        host="0.0.0.0",
    ),
    "p-s": agent("p-s", 0, tool("summarize", "summary", "1.0.0", ["text"], schema={})),
    "prov-claude": agent(
        "prov-claude",
        9101,
        tool("claude_chat", "llm", "1.0.0", ["claude", "sonnet"], kwargs={"vendor": "anthropic"}),
    ),
    "prov-gpt": agent(
        "prov-gpt",
        9102,
        tool("gpt_chat", "llm", "2.0.0", ["openai", "gpt"], kwargs={"vendor": "openai", "t": 3}),
    ),
    "prov-local": agent("prov-local", 9103, tool("local_chat", "llm", "1.5.0", ["claude", "x"])),
    "prov-bare": agent("prov-bare", 9104, tool("bare", "llm", "9.0.0", ["claude"], schema=None)),
}
LLM_AGENTS = {
    "llm-all": llm_agent(
        "llm-all",
        9201,
        by_name=tools_of(["web_search", "pdf"]),
        by_object=tools_of(
            [
                {"capability": "web_search", "tags": ["+gpu", "fast"]},
                {"capability": "pdf", "version": ">=2.0.0"},
            ]
        ),
        excluding=tools_of([{"capability": "web_search", "tags": ["-typescript"]}]),
        tags_only=tools_of([{"tags": ["gpu"]}]),
        star_item=tools_of(["*"]),
        versions=tools_of([{"capability": "web_search", "version": "^1.0.0"}, "math"]),
        nothing=tools_of(["missing"]),
    ),
    "llm-best": llm_agent(
        "llm-best",
        9202,
        one_cap=tools_of(["web_search"], "best_match"),
        two_caps=tools_of(["web_search", "pdf"], "best_match"),
        tagged=tools_of([{"capability": "pdf", "tags": ["document"]}], "best_match"),
    ),
    "llm-star": llm_agent("llm-star", 9203, everything=tools_of([], "*")),
    "llm-deleg": llm_agent(
        "llm-deleg",
        9204,
        tagged=provider(["claude"]),
        preferred=provider(["+openai"]),
        excluded=provider(["-openai", "+sonnet"]),
        versioned=provider(["+claude"], "<1.5.0"),
        unmatched=provider(["mistral"]),
        untagged=provider([]),
        other_namespace=provider(["+claude"], namespace="elsewhere"),
    ),
    # Declarations the Go registry accepts but cannot (fully) use.
    "llm-odd": llm_agent("llm-odd", 9206, **ODD),
}
# An agent whose own tool matches its filter: registered once (never re-sent, see above).
SELF = agent(
    "llm-self",
    9205,
    tool("own_notes", "notes", "1.0.0"),
    tool("mine", "mine", schema=None, **tools_of(["notes", "summary"])),
    tool("others", "others", schema=None, **tools_of([], "*")),
)
RANDOM_ORDER = {("llm-best", "two_caps")}
"""best_match lists with several capabilities: the Go registry orders them by iterating a Go
map, i.e. randomly; compared as sets (sorted by name)."""
KNOWN = {("llm-deleg", "untagged"), ("llm-deleg", "other_namespace")}
"""Provider choices where we deliberately differ (docs/protocol.md), checked in the test."""


class Target:
    """A registry under test, reached over HTTP; requests rotate over its nodes' URLs."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], ours: bool) -> None:
        self.session = session
        self.urls = urls
        self.turn = 0
        # Our replicas' reads reflect every acknowledged write only when asked to.
        self.reads = {"consistency": "linearizable"} if ours else {}

    def _url(self) -> str:
        self.turn += 1
        return self.urls[self.turn % len(self.urls)]

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self._url()}/heartbeat", json=body) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
        assert answer["status"] == "success", answer
        return answer

    async def head(self, agent_id: str) -> int:
        async with self.session.head(f"{self._url()}/heartbeat/{agent_id}") as resp:
            return resp.status

    async def head_until(self, agent_id: str, status: int) -> int:
        """The HEAD status, polled until ``status`` (a replica may apply a write a moment after
        the replica that acknowledged it)."""
        if len(self.urls) == 1:
            return await self.head(agent_id)
        seen: list[int] = []

        async def check() -> bool:
            seen.append(await self.head(agent_id))
            return seen[-1] == status

        with contextlib.suppress(AssertionError):  # the caller compares what was seen last
            await until(check, timeout=10)
        return seen[-1]

    async def resolutions(self) -> dict[str, Any]:
        """Every agent's ``(llm_tool_resolutions, llm_provider_resolutions)`` in ``GET /agents``
        (the Go registry's ``null`` for none as ``[]``, what ours answers)."""
        async with self.session.get(f"{self._url()}/agents", params=self.reads) as resp:
            assert resp.status == 200, await resp.text()
            agents = (await resp.json())["agents"]
        return {
            agent["id"]: (
                agent.get("llm_tool_resolutions") or [],
                agent.get("llm_provider_resolutions") or [],
            )
            for agent in agents
        }

    async def delete(self, agent_id: str) -> None:
        async with self.session.delete(f"{self._url()}/agents/{agent_id}") as resp:
            assert resp.status in (200, 204), await resp.text()


Answers = dict[tuple[str, str, str], Any]
"""(round, agent, function) -> the llm_tools list or llm_providers item (None: absent)."""
Listed = dict[str, dict[str, Any]]
"""round -> agent -> its (llm_tool_resolutions, llm_provider_resolutions) in GET /agents."""


def record(answers: Answers, round_name: str, agent_id: str, answer: dict[str, Any]) -> None:
    tools, providers = answer["llm_tools"], answer.get("llm_providers", {})
    declared = LLM_AGENTS.get(agent_id, SELF)["tools"]
    assert set(tools) | set(providers) <= {function["function_name"] for function in declared}
    for function in declared:
        name = function["function_name"]
        if "llm_filter" in function:
            listed = tools.get(name)
            if (agent_id, name) in RANDOM_ORDER and listed is not None:
                listed = sorted(listed, key=lambda item: item["name"])
            answers[(round_name, agent_id, name)] = listed
        elif "llm_provider" in function:
            answers[(round_name, agent_id, name)] = providers.get(name)


async def scenario(target: Target) -> tuple[Answers, dict[str, dict[str, int]], Listed]:
    """Run the registrations and changes; every LLM answer, HEAD statuses after changes, and
    GET /agents's LLM resolutions after each round (and right after each change, before the
    LLM agents heartbeat: "<round> unheard")."""
    answers: Answers = {}
    heads: dict[str, dict[str, int]] = {}
    listed: Listed = {}
    for body in PROVIDERS.values():
        await target.post(body)
    for agent_id, body in LLM_AGENTS.items():
        record(answers, "registered", agent_id, await target.post(body))
    record(answers, "registered", "llm-self", await target.post(SELF))
    listed["registered"] = await target.resolutions()
    changes = [("left", target.delete), ("back", lambda a: target.post(PROVIDERS[a]))]
    for round_name, change in changes:
        for provider_id in ("p-a", "prov-local"):
            await change(provider_id)
        listed[f"{round_name} unheard"] = await target.resolutions()
        # Every LLM agent but llm-best sees a different answer now (p-a's and prov-local's
        # tools never win best_match): exactly those must be told to send a full heartbeat.
        heads[round_name] = {
            agent_id: await target.head_until(agent_id, 200 if agent_id == "llm-best" else 202)
            for agent_id in LLM_AGENTS
        }
        for agent_id, body in LLM_AGENTS.items():
            record(answers, round_name, agent_id, await target.post(body))
            assert await target.head_until(agent_id, 200) == 200
        listed[round_name] = await target.resolutions()
    return answers, heads, listed


def comparable(listed: dict[str, Any]) -> dict[str, Any]:
    """``listed`` without the provider choices where we deliberately differ (KNOWN)."""
    return {
        agent_id: (tools, [e for e in providers if (agent_id, e["function_name"]) not in KNOWN])
        for agent_id, (tools, providers) in listed.items()
    }


def marked_unavailable(listed: dict[str, Any], gone: set[str]) -> dict[str, Any]:
    """``listed`` as the Go registry turns it when the agents ``gone`` leave: their entries
    become ``unavailable``, still naming them (UpdateDependencyStatusOnAgentOffline), and
    move behind the available ones (it lists an agent's entries by status)."""
    return {
        agent_id: tuple(
            sorted(
                (
                    entry | {"status": "unavailable"}
                    if entry.get("provider_agent_id") in gone
                    else entry
                    for entry in entries
                ),
                key=lambda entry: entry["status"],
            )
            for entries in pair
        )
        for agent_id, pair in listed.items()
    }


def chosen(item: dict[str, Any] | None) -> str | None:
    return None if item is None else f"{item['agent_id']}/{item['name']}"


def names(tools: list[dict[str, Any]] | None) -> list[str] | None:
    return None if tools is None else [f"{t['endpoint']}/{t['name']}" for t in tools]


OUR_TOPOLOGIES = {"three replicas": "raft", "three postgresql replicas": "postgresql"}
"""The ``our_urls`` variants with three replicas, and the kind of tests/pg_replicas.py each is."""


@pytest.fixture(params=["one node", *OUR_TOPOLOGIES])
def our_urls(
    request: pytest.FixtureRequest, tmp_path: Path, registries: list[Registry]
) -> Iterator[list[str]]:
    """The URLs of our registry under test, started: one node, or each of three replicas."""
    if request.param == "one node":
        registries.append(Registry(tmp_path / "single").start())
        yield [registries[-1].url]
    else:
        cluster = three_replicas(OUR_TOPOLOGIES[request.param], request, tmp_path, registries)()
        cluster.start_all()
        yield [node.url for node in cluster.nodes]


async def test_llm_tools_and_providers_match_the_go_registry(
    our_urls: list[str],
    registries: list[Registry],
    go_registry: str,  # noqa: F811 (the fixture imported above)
) -> None:
    # A bounded wait: a registry that stops answering fails the test instead of hanging it.
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await all_ready(session, registries)

        theirs, go_heads, go_listed = await scenario(Target(session, [go_registry], ours=False))
        ours, our_heads, our_listed = await scenario(Target(session, our_urls, ours=True))

    assert ours.keys() == theirs.keys()
    differences = [
        (key, ours[key], theirs[key])
        for key in ours
        if key[1:] not in KNOWN and ours[key] != theirs[key]
    ]
    assert differences == [], "\n".join(map(str, differences))

    # GET /agents: the same LLM resolutions for every agent after every round (the known
    # provider choices aside), but for the "unavailable" the Go registry shows until the
    # consumer's next full heartbeat (docs/protocol.md), where ours is already up to date.
    gone = {"p-a", "prov-local"}
    assert go_listed["left unheard"] == marked_unavailable(go_listed["registered"], gone)
    assert go_listed["back unheard"] == go_listed["left"]
    assert our_listed["left unheard"] == our_listed["left"]
    assert our_listed["back unheard"] == our_listed["back"]
    assert our_listed.keys() == go_listed.keys()
    listed_differences = []
    for round_name in ("registered", "left", "back"):
        mine, go = comparable(our_listed[round_name]), comparable(go_listed[round_name])
        # DELETEd agents: the Go registry keeps them (unhealthy) until its sweep, we do not.
        assert go.keys() - mine.keys() == (gone if round_name == "left" else set())
        assert mine.keys() <= go.keys()
        listed_differences += [(round_name, a, mine[a], go[a]) for a in mine if mine[a] != go[a]]
    assert listed_differences == [], "\n".join(map(str, listed_differences))

    # What the table expects of both (so that agreeing on nothing could not pass).
    first = {key[1:]: value for key, value in theirs.items() if key[0] == "registered"}
    assert names(first[("llm-all", "by_name")]) == [
        "http://127.0.0.1:9001/search_web",
        "http://127.0.0.1:9002/search_web2",
        "http://127.0.0.1:9001/read_pdf",
        "http://127.0.0.1:9002/ocr",
    ]
    assert names(first[("llm-all", "by_object")]) == [
        "http://localhost:9003/search_web",  # +gpu fast: 15 points, 0.0.0.0 -> localhost
        "http://127.0.0.1:9002/ocr",
    ]
    assert names(first[("llm-all", "nothing")]) == []
    # Mesh order; p-a and prov-local, re-registered, come back at the end.
    left = [
        "http://127.0.0.1:9002/search_web2",
        "http://127.0.0.1:9002/ocr",
        "http://localhost:9003/search_web",
        "http://localhost:9003/calc",
        "stdio://p-s/summarize",
        "http://127.0.0.1:9101/claude_chat",
        "http://127.0.0.1:9102/gpt_chat",
        "http://127.0.0.1:9205/own_notes",
    ]
    assert names(theirs[("left", "llm-star", "everything")]) == left
    assert names(theirs[("back", "llm-star", "everything")]) == [
        *left,
        "http://127.0.0.1:9001/read_pdf",  # its search_web: p-c's comes first, same name
        "http://127.0.0.1:9103/local_chat",
    ]
    assert names(first[("llm-self", "mine")]) == [
        "http://127.0.0.1:9205/own_notes",  # its own tool: filters other than "*" include it
        "stdio://p-s/summarize",
    ]
    assert "own_notes" not in str(names(first[("llm-self", "others")]))
    assert [t["name"] for t in first[("llm-best", "two_caps")]] == ["ocr", "search_web2"]
    providers = {
        round_name: {
            function: chosen(value)
            for (r, agent_id, function), value in theirs.items()
            if r == round_name and agent_id == "llm-deleg" and (agent_id, function) not in KNOWN
        }
        for round_name in ("registered", "left", "back")
    }
    assert (
        providers["registered"]
        == providers["back"]
        == {
            "tagged": "prov-local/local_chat",  # equal tag scores: the higher version
            "preferred": "prov-gpt/gpt_chat",
            "excluded": "prov-claude/claude_chat",
            "versioned": "prov-claude/claude_chat",
            "unmatched": None,
        }
    )
    assert providers["left"]["tagged"] == "prov-claude/claude_chat"
    assert first[("llm-deleg", "preferred")]["kwargs"] == {"vendor": "openai", "t": 3}

    listed = go_listed["registered"]
    tool_entries, provider_entries = listed["llm-all"][0], listed["llm-deleg"][1]
    assert tool_entries[0] == {
        "endpoint": "http://127.0.0.1:9001",
        "filter_capability": "web_search",
        "filter_mode": "all",
        "function_name": "by_name",
        "mcp_tool": "search_web",
        "provider_agent_id": "p-a",
        "provider_capability": "web_search",
        "status": "available",
    }
    # One entry per item and listed tool of its capability (every listed tool for tags only);
    # unresolved items last, told as declared ("*" is no capability here).
    assert [
        (e["function_name"], e["filter_capability"], e.get("mcp_tool")) for e in tool_entries
    ] == [
        ("by_name", "web_search", "search_web"),
        ("by_name", "web_search", "search_web2"),
        ("by_name", "pdf", "read_pdf"),
        ("by_name", "pdf", "ocr"),
        ("by_object", "web_search", "search_web"),
        ("by_object", "pdf", "ocr"),
        ("excluding", "web_search", "search_web"),
        ("tags_only", "", "ocr"),
        ("tags_only", "", "search_web"),
        ("versions", "web_search", "search_web"),
        ("versions", "math", "calc"),
        ("star_item", "*", None),
        ("nothing", "missing", None),
    ]
    assert tool_entries[7]["filter_tags"] == ["gpu"] and "filter_tags" not in tool_entries[9]
    assert tool_entries[-1] == {
        "filter_capability": "missing",
        "filter_mode": "all",
        "function_name": "nothing",
        "status": "unresolved",
    }
    assert listed["llm-star"] == ([], [])  # "*" mode with an empty filter: nothing to tell
    assert [(e["function_name"], e["status"]) for e in listed["llm-odd"][0]] == [
        ("odd_mode", "available"),  # a mode that is not a string: "all"
        ("bad_item", "unresolved"),  # the list could not be built; its usable item is told
    ]
    assert provider_entries[0] == {
        "endpoint": "http://127.0.0.1:9103",
        "function_name": "tagged",
        "mcp_tool": "local_chat",
        "provider_agent_id": "prov-local",
        "required_capability": "llm",
        "required_tags": ["claude"],
        "status": "available",
    }
    assert provider_entries[-1] == {
        "function_name": "unmatched",
        "required_capability": "llm",
        "required_tags": ["mistral"],
        "status": "unresolved",
    }
    assert listed["llm-odd"][1] == []  # no capability: no entry

    # The deliberate differences (docs/protocol.md), as each registry answers them.
    for round_name in ("registered", "left", "back"):
        told = {
            side: {
                e["function_name"]: (e["status"], e.get("provider_agent_id"))
                for e in seen[round_name]["llm-deleg"][1]
            }
            for side, seen in (("go", go_listed), ("ours", our_listed))
        }
        assert (told["go"]["untagged"], told["ours"]["untagged"]) == (
            ("available", "prov-claude"),
            ("available", "prov-gpt"),
        )
        assert (told["go"]["other_namespace"], told["ours"]["other_namespace"]) == (
            ("available", "prov-local" if round_name != "left" else "prov-claude"),
            ("unresolved", None),
        )
    for round_name in ("registered", "left", "back"):
        key = (round_name, "llm-deleg", "untagged")
        # No tags: the Go registry takes the first registered provider; we rank as for a
        # dependency (highest version).
        assert (chosen(theirs[key]), chosen(ours[key])) == (
            "prov-claude/claude_chat",
            "prov-gpt/gpt_chat",
        )
        key = (round_name, "llm-deleg", "other_namespace")
        # The Go registry ignores the provider's namespace; we look only there.
        assert (chosen(theirs[key]), chosen(ours[key])) == (
            "prov-local/local_chat" if round_name != "left" else "prov-claude/claude_chat",
            None,
        )
    every = {agent_id: 202 for agent_id in LLM_AGENTS}
    assert our_heads == {"left": every | {"llm-best": 200}, "back": every | {"llm-best": 200}}
    # The Go registry answers 202 after any registration change anywhere.
    assert go_heads == {"left": every, "back": every}
