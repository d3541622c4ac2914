"""The official OpenAI Python SDK's Responses API (``client.responses``)
against aiproxy, for every kind of upstream.

For mock (built in), openai-custom (OpenAI chat completions mock),
claude-custom (Anthropic Messages mock) and gemini-cli (Google Code Assist
mock, through its OAuth credentials file): ``responses.create`` unary
(status, ``output_text``, usage) and streamed (the event sequence with
numbered events, deltas that add up to the unary text, the
``responses.stream()`` helper's final response), a function-call round trip
(``function_call`` with ``call_id`` → ``function_call_output`` → text, unary
and streamed), and what each upstream received: key, model, instructions
as its system prompt, ``max_output_tokens``, temperature, the tool in its
own shape and the tool result in its own shape. Then the edges: stored
state (``previous_response_id``) and built-in tools refused with a 400 in
OpenAI's error shape, a wrong key, a stream the upstream cuts off ending in
``response.failed``, structured output and reasoning effort reaching the
upstream, and the route in /metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from oauth_upstreams import CodeAssistUpstream
from support import (
    GEMINI_CLI_PROJECT,
    Gateway,
    WEATHER_SCHEMA,
    assert_upstream_call,
    claude_system_text,
    claude_text,
    expected_answer_start,
    expected_tool_args,
    expected_tool_answer_start,
    openai_client,
    openai_text,
)

pytestmark = pytest.mark.timeout(60)

PROVIDERS = ["mock", "openai-custom", "claude-custom", "gemini-cli"]
MODEL = "gpt-5-mini"
SYSTEM = "You are terse."
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather for a city",
          "parameters": WEATHER_SCHEMA}]
TOOL_RESULT = "sunny, 21C"


@dataclass
class Target:
    """A gateway serving ``provider`` and that provider's mock upstream
    (None for the built-in mock)."""

    gw: Gateway
    provider: str
    up: Any
    upstreams: Any = None  # the session gateway's upstreams (conftest.Upstreams)

    def client(self, **kw):
        return openai_client(self.gw, self.provider, **kw)

    def generations(self) -> list:
        """The generation requests the upstream received."""
        if self.up is None:
            return []
        if isinstance(self.up, CodeAssistUpstream):
            return self.up.generations()
        path = "/v1/messages" if self.provider == "claude-custom" else "/v1/chat/completions"
        return self.up.requests_to(path)


@pytest.fixture(params=PROVIDERS)
def target(request, gw, upstreams, gemini_cli) -> Target:
    provider = request.param
    if provider == "gemini-cli":
        return Target(gemini_cli.gw, provider, gemini_cli.up)
    return Target(gw, provider, upstreams.for_provider(provider), upstreams)


def answer_start(t: Target, prompt: str) -> str:
    if t.provider == "gemini-cli":
        return f"gemini says: {prompt}"
    return expected_answer_start(t.provider, prompt)


def tool_args(t: Target) -> dict:
    if t.provider == "gemini-cli":
        return {"city": "Paris", "days": 3}
    return expected_tool_args(t.provider)


def tool_answer_start(t: Target, prompt: str) -> str:
    if t.provider == "gemini-cli":
        return f"gemini tool result: {TOOL_RESULT}"
    return expected_tool_answer_start(t.provider, prompt, TOOL_RESULT)


def assert_plain_request(t: Target, prompt: str, *, max_tokens: int | None, stream: bool):
    """The one generation request the upstream got, in its own shape."""
    if t.provider in ("mock", "openai-custom", "claude-custom"):
        assert_upstream_call(t.upstreams, t.provider, model=MODEL, system=SYSTEM,
                             prompt=prompt, max_tokens=max_tokens, temperature=0)
    else:
        gens = t.generations()
        assert len(gens) == 1, [g.path for g in gens]
        body = gens[0].body
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        assert gens[0].path == f"/v1internal:{method}"
        assert body["model"] == MODEL and body["project"] == GEMINI_CLI_PROJECT
        req = body["request"]
        assert [p["text"] for p in req["systemInstruction"]["parts"]] == [SYSTEM]
        assert req["contents"][-1]["parts"][-1]["text"] == prompt
        config = req["generationConfig"]
        assert config["temperature"] == 0
        if max_tokens is not None:
            assert config["maxOutputTokens"] == max_tokens
    if t.up is not None and t.provider != "gemini-cli":
        assert bool(t.generations()[-1].body.get("stream")) is stream


# ---- unary -------------------------------------------------------------------


def test_unary(target, nonce):
    prompt = f"What is the capital of France {nonce}"
    r = target.client().responses.create(model=MODEL, instructions=SYSTEM, input=prompt,
                                         temperature=0, max_output_tokens=200)
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == MODEL
    assert r.output_text.startswith(answer_start(target, prompt)), r.output_text
    messages = [o for o in r.output if o.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant"
    assert messages[0].content[0].type == "output_text"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert_plain_request(target, prompt, max_tokens=200, stream=False)
    if target.provider in ("openai-custom", "claude-custom"):
        # The instructions reached the upstream as its system prompt.
        assert f"[system: {SYSTEM}]" in r.output_text


def test_input_items_with_developer_and_assistant_turns(target, nonce):
    prompt = f"And of Italy {nonce}"
    r = target.client().responses.create(model=MODEL, temperature=0, input=[
        {"role": "developer", "content": SYSTEM},
        {"role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Paris."}]},
        {"role": "user", "content": prompt},
    ])
    assert r.output_text.startswith(answer_start(target, prompt))
    if target.provider == "openai-custom":
        msgs = target.generations()[-1].body["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        assert openai_text(msgs[0]["content"]) == SYSTEM
        assert openai_text(msgs[2]["content"]) == "Paris."
    elif target.provider == "claude-custom":
        body = target.generations()[-1].body
        assert claude_system_text(body) == SYSTEM
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert claude_text(body["messages"][1]["content"]) == "Paris."
    elif target.provider == "gemini-cli":
        req = target.generations()[-1].body["request"]
        assert [c["role"] for c in req["contents"]] == ["user", "model", "user"]
        assert req["systemInstruction"]["parts"][0]["text"] == SYSTEM


# ---- streams -----------------------------------------------------------------


def test_stream_events(target, nonce):
    client = target.client()
    prompt = f"Describe a sunset over the sea {nonce}"
    unary = client.responses.create(model=MODEL, instructions=SYSTEM, input=prompt,
                                    temperature=0)
    if target.up is not None:
        target.up.reset()
    events = list(client.responses.create(model=MODEL, instructions=SYSTEM, input=prompt,
                                          temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] == "response.completed", types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types.count("response.completed") == 1
    for t in ("response.output_item.added", "response.content_part.added",
              "response.output_text.done", "response.content_part.done",
              "response.output_item.done"):
        assert t in types, f"{t} missing: {types}"
    assert types.index("response.output_item.added") < types.index("response.output_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == unary.output_text
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text
    assert done.usage.output_tokens > 0 and done.usage.input_tokens > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    assert_plain_request(target, prompt, max_tokens=None, stream=True)


def test_stream_helper_final_response(target, nonce):
    prompt = f"Name three rivers {nonce}"
    with target.client().responses.stream(model=MODEL, instructions=SYSTEM, input=prompt,
                                          temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    assert final.output_text.startswith(answer_start(target, prompt))


# ---- function calls ------------------------------------------------------------


def assert_tool_offered(t: Target):
    if t.up is None:
        return
    body = t.generations()[-1].body
    if t.provider == "openai-custom":
        assert body["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": WEATHER_SCHEMA}}]
    elif t.provider == "claude-custom":
        assert [(x["name"], x["input_schema"]["properties"]) for x in body["tools"]] == [
            ("get_weather", WEATHER_SCHEMA["properties"])]
    elif t.provider == "gemini-cli":
        decls = body["request"]["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in decls] == ["get_weather"]


def assert_tool_result_sent(t: Target, call_id: str):
    """The second turn carried the call and its result in the upstream's shape."""
    if t.up is None:
        return
    body = t.generations()[-1].body
    if t.provider == "openai-custom":
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
        assert msgs[1]["tool_calls"][0]["id"] == call_id
        assert json.loads(msgs[1]["tool_calls"][0]["function"]["arguments"]) == tool_args(t)
        assert msgs[2] == {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}
    elif t.provider == "claude-custom":
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
        uses = [b for b in msgs[1]["content"] if b["type"] == "tool_use"]
        assert uses == [{"type": "tool_use", "id": call_id, "name": "get_weather",
                         "input": tool_args(t)}]
        results = [b for b in msgs[2]["content"] if b["type"] == "tool_result"]
        assert len(results) == 1 and results[0]["tool_use_id"] == call_id
        assert TOOL_RESULT in json.dumps(results[0]["content"])
    elif t.provider == "gemini-cli":
        contents = body["request"]["contents"]
        assert [c["role"] for c in contents] == ["user", "model", "user"]
        calls = [p["functionCall"] for p in contents[1]["parts"] if "functionCall" in p]
        assert calls == [{"name": "get_weather", "args": tool_args(t)}]
        answers = [p["functionResponse"] for p in contents[2]["parts"] if "functionResponse" in p]
        assert len(answers) == 1 and answers[0]["name"] == "get_weather"
        assert TOOL_RESULT in json.dumps(answers[0]["response"])


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_function_call_round_trip(target, nonce, stream):
    client = target.client()
    prompt = f"What is the weather in Paris {nonce}"
    history: list = [{"role": "user", "content": prompt}]
    if stream:
        with client.responses.stream(model=MODEL, input=history, tools=TOOLS) as s:
            events = list(s)
            first = s.get_final_response()
        arg_deltas = "".join(e.delta for e in events
                             if e.type == "response.function_call_arguments.delta")
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert len(done) == 1 and json.loads(done[0].arguments) == tool_args(target)
        assert arg_deltas == done[0].arguments
    else:
        first = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    assert json.loads(call.arguments) == tool_args(target)
    if target.provider == "gemini-cli":
        assert first.output[0].type == "message"
        assert first.output[0].content[0].text == CodeAssistUpstream.PREAMBLE
    assert_tool_offered(target)

    # The client sends the answer's items back, then the call's output.
    history += first.output
    history.append({"type": "function_call_output", "call_id": call.call_id,
                    "output": TOOL_RESULT})
    second = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.status == "completed"
    assert not [o for o in second.output if o.type == "function_call"]
    assert second.output_text.startswith(tool_answer_start(target, prompt)), second.output_text
    assert_tool_result_sent(target, call.call_id)


# ---- edges ---------------------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    ({"previous_response_id": "resp_123"}, "no server-side state"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "file_search"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "file_id"),
])
def test_refusals_are_400_in_openai_shape(target, extra, words):
    body = {"model": MODEL, "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as e:
        target.client().responses.create(**body)
    err = e.value.response.json()
    assert set(err) == {"error"}
    assert err["error"]["type"] == "invalid_request_error"
    assert words in err["error"]["message"]
    assert target.generations() == []


def test_web_search_is_dropped_not_refused(target, nonce):
    prompt = f"Any news {nonce}"
    r = target.client().responses.create(
        model=MODEL, input=prompt, tools=[{"type": "web_search", "external_web_access": False}])
    assert r.status == "completed" and r.output_text.startswith(answer_start(target, prompt))
    for g in target.generations():
        assert "web_search" not in json.dumps(g.body)


def test_wrong_key_is_authentication_error(target):
    with pytest.raises(openai.AuthenticationError) as e:
        target.client(key="sk-wrong").responses.create(model=MODEL, input="hi")
    assert e.value.status_code == 401
    assert e.value.response.json()["error"]["type"] == "authentication_error"
    assert target.generations() == []


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_cut_off_stream_ends_in_response_failed(gw, upstreams, nonce, provider):
    up = upstreams.for_provider(provider)
    up.truncate_after = 4
    events = list(openai_client(gw, provider).responses.create(
        model=MODEL, input=f"Tell a long story {nonce}", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-2:] == ["error", "response.failed"], types
    assert "response.completed" not in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and "upstream" in failed.error.message
    # Every item that was opened was closed before the end.
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert added == done and [o.id for o in failed.output] == done


def test_structured_output_and_effort_reach_the_upstream(gw, upstreams, nonce):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    openai_client(gw, "openai-custom").responses.create(
        model=MODEL, input=f"A city {nonce}", reasoning={"effort": "high"},
        text={"format": {"type": "json_schema", "name": "city", "schema": schema}})
    body = upstreams.openai.last("/v1/chat/completions").body
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["reasoning_effort"] == "high"


def test_responses_route_in_metrics(gw, upstreams, nonce):
    openai_client(gw, "mock").responses.create(model=MODEL, input=f"count me {nonce}")
    metrics = gw.request("GET", "/metrics").text
    lines = [ln for ln in metrics.splitlines()
             if ln.startswith("aiproxy_http_requests_total") and 'route="/v1/responses"' in ln]
    assert lines, "no aiproxy_http_requests_total sample for /v1/responses"
    assert any('status="200"' in ln for ln in lines)
