"""Several tool calls in one answer, after some text, across protocols.

The upstream mocks answer a prompt containing MULTI_TOOL_TRIGGER with the
text "Calling tools." followed by one call of every offered tool. For each
client protocol (OpenAI, Anthropic, Gemini) against each upstream family
(openai-custom, claude-custom), unary and streamed:
* the client sees the text and both calls, in order, with their own ids and
  arguments (streams: OpenAI tool-call indexes 0 and 1, Anthropic block
  indexes consecutive, each input_json_delta on its own block);
* sending both results back works: Anthropic gets them in ONE user turn
  right after the assistant turn (the API rejects anything else), OpenAI
  gets one ``tool`` message per call with the matching ``tool_call_id``.
"""

import json

import pytest
from google.genai import types

from mock_upstreams import MULTI_TOOL_TRIGGER
from support import (
    WEATHER_SCHEMA,
    anthropic_client,
    gemini_client,
    openai_client,
)

pytestmark = pytest.mark.timeout(60)

UPSTREAMS = ["openai-custom", "claude-custom"]
TIME_SCHEMA = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
PREFIX = {"openai-custom": "openai", "claude-custom": "claude"}


def expected_args(provider):
    p = PREFIX[provider]
    return [{"city": f"{p}-city", "days": 3}, {"tz": f"{p}-tz"}]


def check_upstream_second_leg(upstreams, provider, ids):
    if provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        uses = [b for b in sent[1]["content"] if b["type"] == "tool_use"]
        assert [u["name"] for u in uses] == ["get_weather", "get_time"]
        results = [b for b in sent[2]["content"] if b["type"] == "tool_result"]
        assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
        if ids is not None:
            assert [u["id"] for u in uses] == ids
    else:
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
        calls = sent[1]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
        assert [m["tool_call_id"] for m in sent[2:]] == [c["id"] for c in calls]
        if ids is not None:
            assert [c["id"] for c in calls] == ids


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", UPSTREAMS)
def test_openai_client(gw, upstreams, nonce, provider, stream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
             {"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}}]
    client = openai_client(gw, provider)
    messages = [{"role": "user", "content": f"{MULTI_TOOL_TRIGGER} {nonce}"}]
    if stream:
        chunks = list(client.chat.completions.create(model="m", messages=messages, tools=tools,
                                                     stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        calls: dict[int, dict] = {}
        for c in chunks:
            for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = d.id or call["id"]
                if d.function:
                    call["name"] = d.function.name or call["name"]
                    call["arguments"] += d.function.arguments or ""
        assert sorted(calls) == [0, 1], "tool-call indexes start at 0 and are consecutive"
        got = [calls[0], calls[1]]
        finish = [c.choices[0].finish_reason for c in chunks
                  if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        r = client.chat.completions.create(model="m", messages=messages, tools=tools)
        text = r.choices[0].message.content
        got = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
               for c in r.choices[0].message.tool_calls]
        assert r.choices[0].finish_reason == "tool_calls"
    assert text == "Calling tools."
    assert [c["name"] for c in got] == ["get_weather", "get_time"]
    assert [json.loads(c["arguments"]) for c in got] == expected_args(provider)
    assert all(c["id"] for c in got) and got[0]["id"] != got[1]["id"]

    messages += [
        {"role": "assistant", "content": text, "tool_calls": [
            {"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}} for c in got]},
        {"role": "tool", "tool_call_id": got[0]["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": got[1]["id"], "content": "noon"},
    ]
    second = client.chat.completions.create(model="m", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert "noon" in second.choices[0].message.content
    check_upstream_second_leg(upstreams, provider, [c["id"] for c in got])


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", UPSTREAMS)
def test_anthropic_client(gw, upstreams, nonce, provider, stream):
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA},
             {"name": "get_time", "input_schema": TIME_SCHEMA}]
    client = anthropic_client(gw, provider)
    messages = [{"role": "user", "content": f"{MULTI_TOOL_TRIGGER} {nonce}"}]
    if stream:
        with client.messages.stream(model="m", max_tokens=300, messages=messages,
                                    tools=tools) as s:
            starts = [e.index for e in s if e.type == "content_block_start"]
            m = s.get_final_message()
        assert starts == [0, 1, 2]
    else:
        m = client.messages.create(model="m", max_tokens=300, messages=messages, tools=tools)
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["text", "tool_use", "tool_use"]
    assert m.content[0].text == "Calling tools."
    uses = m.content[1:]
    assert [u.name for u in uses] == ["get_weather", "get_time"]
    assert [u.input for u in uses] == expected_args(provider)
    assert uses[0].id != uses[1].id

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": uses[1].id, "content": "noon"}]},
    ]
    second = client.messages.create(model="m", max_tokens=300, messages=messages, tools=tools)
    assert second.stop_reason == "end_turn"
    assert "noon" in second.content[0].text
    check_upstream_second_leg(upstreams, provider, [u.id for u in uses])


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", UPSTREAMS)
def test_gemini_client(gw, upstreams, nonce, provider, stream):
    decls = [types.FunctionDeclaration(name="get_weather", parameters_json_schema=WEATHER_SCHEMA),
             types.FunctionDeclaration(name="get_time", parameters_json_schema=TIME_SCHEMA)]
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=decls)],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    client = gemini_client(gw, provider)
    prompt = f"{MULTI_TOOL_TRIGGER} {nonce}"
    if stream:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash",
                                                            contents=prompt, config=config))
        parts = [p for c in chunks if c.candidates and c.candidates[0].content
                 for p in (c.candidates[0].content.parts or [])]
    else:
        r = client.models.generate_content(model="gemini-2.5-flash", contents=prompt,
                                           config=config)
        parts = r.candidates[0].content.parts
    text = "".join(p.text or "" for p in parts)
    calls = [p.function_call for p in parts if p.function_call]
    assert text == "Calling tools."
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert [c.args for c in calls] == expected_args(provider)

    contents = [
        types.Content(role="user", parts=[types.Part(text=prompt)]),
        types.Content(role="model", parts=parts),
        types.Content(role="user", parts=[
            types.Part.from_function_response(name="get_weather", response={"result": "sunny"}),
            types.Part.from_function_response(name="get_time", response={"result": "noon"})]),
    ]
    second = client.models.generate_content(model="gemini-2.5-flash", contents=contents,
                                            config=config)
    assert not second.function_calls
    assert "noon" in second.text
    check_upstream_second_leg(upstreams, provider, None)
