"""The Anthropic Messages API as clients send it today (issue 17, item 1),
through every provider of the shared gateway (mock, openai-custom,
claude-custom), with raw HTTP so the body is exactly what Claude Code sends:

* ``system`` messages inside ``messages`` (a string or text blocks) answer
  200 everywhere; the claude-custom upstream gets the body untouched (every
  current field: ``output_config``, ``context_management``, adaptive
  ``thinking``, ``cache_control`` on system blocks, tools and messages, a
  web search server tool, ``container``, ``mcp_servers``, ``service_tier``,
  ``metadata``); the openai-custom upstream gets them as ``system`` messages
  at the same places, the one between a tool call and its result right after
  the result, and none of the fields it has no equivalent for;
* a gateway at ``--log-level debug`` names the dropped fields in one line;
* ``/v1/messages/count_tokens`` refuses exactly what ``/v1/messages``
  refuses, with the same message, and accepts the rest;
* ``?beta=true`` (what Claude Code appends) is tolerated on every route.
"""

from __future__ import annotations

import json

import pytest

from support import API_KEY, provider_args

pytestmark = pytest.mark.timeout(60)

HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
TOOL_SCHEMA = {"type": "object", "properties": {"file_path": {"type": "string"}},
               "required": ["file_path"]}


def current_body(nonce: str) -> dict:
    """A Messages request with every field Claude Code 2.1 and the current
    API use, and system messages inside ``messages``."""
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 4000,
        "system": [{"type": "text", "text": "You are an agent."},
                   {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"Look at x {nonce}",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "Agent types: Explore, Plan."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "Lookup",
                 "input": {"file_path": "/x"}}]},
            {"role": "system", "content": [{"type": "text", "text": "Plan mode is on."}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "x is 42"},
                {"type": "text", "text": f"So what is x {nonce}?"}]},
        ],
        "tools": [
            {"name": "Lookup", "description": "Looks up", "input_schema": TOOL_SCHEMA,
             "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user-123"},
        "service_tier": "auto",
        "container": "container_abc",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "ex"}],
    }


@pytest.mark.parametrize("provider", ["mock", "openai-custom", "claude-custom"])
def test_system_messages_and_current_fields(gw, upstreams, nonce, provider):
    body = current_body(nonce)
    r = gw.request("POST", f"/{provider}/v1/messages?beta=true", body=body, headers=HEADERS)
    assert r.status == 200, r.text
    answer = r.json()
    assert answer["type"] == "message" and answer["content"], answer
    if provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body
        assert sent == body, "a same-family request must pass through whole"
    elif provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body
        roles = [m["role"] for m in sent["messages"]]
        # The system message between the call and its result waits for the
        # result; the rest stay where the client put them.
        assert roles == ["system", "user", "system", "assistant", "tool", "user", "system"], sent
        texts = [m["content"] for m in sent["messages"] if m["role"] == "system"]
        assert texts == ["You are an agent.\nBe brief.", "Agent types: Explore, Plan.",
                         "Plan mode is on."]
        assert [t["function"]["name"] for t in sent["tools"]] == ["Lookup"]
        assert sent["reasoning_effort"] == "high"
        assert sent["max_completion_tokens"] == 4000
        for field in ("context_management", "metadata", "service_tier", "container",
                      "mcp_servers", "output_config", "thinking", "cache_control"):
            assert field not in json.dumps(sent), f"{field} sent to an OpenAI upstream"


def test_dropped_fields_are_logged_at_debug(start_gateway, upstreams, nonce):
    g = start_gateway("--api-key", API_KEY, *provider_args(upstreams.openai, upstreams.claude),
                      "--log-level", "debug")
    r = g.request("POST", "/openai-custom/v1/messages", body=current_body(nonce), headers=HEADERS)
    assert r.status == 200, r.text
    lines = [line for line in g.stderr().splitlines()
             if "request fields without an equivalent dropped" in line]
    assert len(lines) == 1, g.stderr()[-3000:]
    for name in ("cache_control", "container", "context_management", "mcp_servers", "metadata",
                 "service_tier", "tools[web_search_20250305]"):
        assert name in lines[0], lines[0]
    assert "from=anthropic" in lines[0] and "to=openai" in lines[0]


BODIES = {
    "current": lambda n: current_body(n),
    "system-first": lambda n: {"model": "m", "max_tokens": 5, "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": f"hi {n}"}]},
    "no-model": lambda n: {"max_tokens": 5, "messages": [{"role": "user", "content": n}]},
    "bad-role": lambda n: {"model": "m", "messages": [{"role": "tool", "content": n}]},
    "messages-not-array": lambda n: {"model": "m", "messages": "hi"},
    "not-an-object": lambda n: [n],
    "not-json": lambda n: "{\"model\": ",
    "model-not-string": lambda n: {"model": 3, "messages": []},
    "empty-body": lambda n: "",
}


@pytest.mark.parametrize("case", list(BODIES))
def test_count_tokens_refuses_what_messages_refuses(gw, upstreams, nonce, case):
    body = BODIES[case](nonce)
    raw = body if isinstance(body, str) else json.dumps(body)
    messages = gw.request("POST", "/v1/messages", body=raw, headers=HEADERS)
    count = gw.request("POST", "/v1/messages/count_tokens?beta=true", body=raw, headers=HEADERS)
    assert count.status == messages.status, (messages.text, count.text)
    if messages.status == 200:
        assert count.json()["input_tokens"] > 0
    else:
        assert messages.status == 400
        assert count.json() == messages.json()
        assert count.json()["error"]["type"] == "invalid_request_error"
    expected_ok = case in ("current", "system-first")
    assert (messages.status == 200) == expected_ok, messages.text


ROUTES = [
    ("POST", "/v1/messages", {"model": "m", "max_tokens": 5,
                              "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/messages/count_tokens", {"model": "m",
                                           "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1beta/models/mock-small:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    ("POST", "/v1beta/models/mock-small:streamGenerateContent",
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/mock-small", None),
    ("GET", "/v1beta/models", None),
    ("GET", "/health", None),
]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_query_strings_are_tolerated_on_every_route(gw, upstreams, method, path, body):
    plain = gw.request(method, path, body=body, headers=HEADERS)
    beta = gw.request(method, f"{path}?beta=true", body=body, headers=HEADERS)
    assert plain.status == 200, plain.text
    assert beta.status == plain.status, beta.text
    assert beta.headers.get("content-type") == plain.headers.get("content-type")
