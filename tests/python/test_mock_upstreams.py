"""The mock upstreams themselves, driven by the official SDKs directly (no
aiproxy): proves that mock_upstreams.py speaks the OpenAI and Anthropic
protocols faithfully enough for the real SDKs — unary, streamed, tool calls,
model lists, validation and error bodies — so that a failure in the gateway
tests points at the gateway, not at the mocks. Runs without the binary.
"""

import json

import anthropic
import openai
import pytest

from support import CLAUDE_UPSTREAM_KEY, OPENAI_UPSTREAM_KEY, WEATHER_SCHEMA

pytestmark = pytest.mark.timeout(60)

OPENAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA}}]
CLAUDE_TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}]


def oa(upstreams, key=OPENAI_UPSTREAM_KEY):
    return openai.OpenAI(api_key=key, base_url=f"{upstreams.openai.root}/v1", max_retries=0)


def an(upstreams, key=CLAUDE_UPSTREAM_KEY):
    return anthropic.Anthropic(api_key=key, base_url=upstreams.claude.root, max_retries=0)


def test_openai_upstream_unary_stream_tools(upstreams):
    c = oa(upstreams)
    r = c.chat.completions.create(model="m", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}])
    assert r.choices[0].message.content == "openai says: hello world [system: be brief]"
    assert r.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c d"}], max_tokens=3,
        stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "openai says: a"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3
    with c.chat.completions.stream(model="m", messages=[{"role": "user", "content": "w?"}],
                                   tools=OPENAI_TOOLS) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "openai-city", "days": 3}
    r2 = c.chat.completions.create(model="m", tools=OPENAI_TOOLS, messages=[
        {"role": "user", "content": "w?"}, final.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert r2.choices[0].message.content == "openai tool result: sunny"
    assert [m.id for m in c.models.list()] == ["gpt-upstream-large", "gpt-upstream-mini"]
    assert upstreams.openai.last("/v1/chat/completions").headers["authorization"] == \
        f"Bearer {OPENAI_UPSTREAM_KEY}"


def test_openai_upstream_errors(upstreams):
    with pytest.raises(openai.AuthenticationError):
        oa(upstreams, key="wrong").models.list()
    upstreams.openai.fail_next(429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as e:
        oa(upstreams).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.BadRequestError):
        oa(upstreams).chat.completions.create(model="m", messages=[
            {"role": "tool", "tool_call_id": "nope", "content": "x"}])


def test_anthropic_upstream_unary_stream_tools(upstreams):
    c = an(upstreams)
    m = c.messages.create(model="claude-x", max_tokens=100, system="be brief",
                          messages=[{"role": "user", "content": "hello world"}])
    assert m.content[0].text == "claude says: hello world [system: be brief]"
    assert m.stop_reason == "end_turn"
    with c.messages.stream(model="claude-x", max_tokens=3,
                           messages=[{"role": "user", "content": "a b c d"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "claude says: a"
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 3
    with c.messages.stream(model="claude-x", max_tokens=100, tools=CLAUDE_TOOLS,
                           messages=[{"role": "user", "content": "w?"}]) as s:
        final = s.get_final_message()
    tu = final.content[0]
    assert final.stop_reason == "tool_use" and tu.input == {"city": "claude-city", "days": 3}
    m2 = c.messages.create(model="claude-x", max_tokens=100, tools=CLAUDE_TOOLS, messages=[
        {"role": "user", "content": "w?"}, {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id,
                                      "content": "sunny"}]}])
    assert m2.content[0].text == "claude tool result: sunny"
    assert [x.id for x in c.models.list().data] == ["claude-upstream-opus", "claude-upstream-haiku"]
    rec = upstreams.claude.last("/v1/messages")
    assert rec.headers["anthropic-version"]


def test_anthropic_upstream_validation_and_errors(upstreams):
    c = an(upstreams)
    with pytest.raises(anthropic.AuthenticationError):
        an(upstreams, key="wrong").models.list()
    with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
        c.messages.create(model="x", max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "x"}]}])
    upstreams.claude.fail_next(529)
    with pytest.raises(anthropic.OverloadedError) as e:
        c.messages.create(model="x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "overloaded_error"
