"""The official Anthropic Python SDK against aiproxy, for every provider.

For mock, openai-custom (Anthropic→OpenAI conversion) and claude-custom
(passthrough): ``messages.create`` and ``messages.stream()`` (well-formed
event sequence, final message with stop_reason, text and usage, streamed
text equal to the unary text), ``max_tokens`` truncation (stop_reason
max_tokens), the tools round trip (tool_use → tool_result → text, unary
and streamed with input_json_delta), ``models.list()`` (Anthropic list
shape, chosen by the ``anthropic-version`` header), ``count_tokens``, a
wrong key (AuthenticationError), invalid JSON (400 in Anthropic's error
shape) and an unknown route (404 not_found_error). Each test also checks
what the upstream received (system message, Bearer key, temperature 0,
max_tokens, tool schema converted to OpenAI ``function.parameters``).
"""

import json

import anthropic
import pytest

from support import (
    API_KEY,
    CLAUDE_UPSTREAM_KEY,
    PROVIDERS,
    WEATHER_SCHEMA,
    anthropic_client,
    assert_upstream_call,
    expected_answer_start,
    expected_models,
    expected_tool_answer_start,
    expected_tool_args,
)

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-test-model"
SYSTEM = "You are terse."
TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
          "input_schema": WEATHER_SCHEMA}]


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_messages_unary(gw, upstreams, nonce, provider):
    prompt = f"What is the capital of France {nonce}"
    m = anthropic_client(gw, provider).messages.create(
        model=MODEL, max_tokens=200, system=SYSTEM,
        extra_body={"temperature": 0},  # this SDK version has no temperature argument
        messages=[{"role": "user", "content": prompt}])
    assert m.type == "message" and m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.model == MODEL
    assert [b.type for b in m.content] == ["text"]
    assert text_of(m).startswith(expected_answer_start(provider, prompt))
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         max_tokens=200, temperature=0)
    if provider == "openai-custom":
        assert "[system: You are terse.]" in text_of(m)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_system_as_blocks(gw, upstreams, nonce, provider):
    prompt = f"Say hello {nonce}"
    m = anthropic_client(gw, provider).messages.create(
        model=MODEL, max_tokens=100,
        system=[{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}])
    assert text_of(m).startswith(expected_answer_start(provider, prompt))
    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert sent[0]["role"] == "system"
        assert "Rule one." in json.dumps(sent[0]) and "Rule two." in json.dumps(sent[0])
        assert sum(1 for x in sent if x["role"] == "system") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_tokens_truncates(gw, upstreams, nonce, provider):
    m = anthropic_client(gw, provider).messages.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": f"Count {nonce}"}])
    assert m.stop_reason == "max_tokens"
    assert len(text_of(m).split()) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_messages_stream(gw, upstreams, nonce, provider):
    client = anthropic_client(gw, provider)
    prompt = f"Describe a sunset over the sea {nonce}"
    kwargs = dict(model=MODEL, max_tokens=200, system=SYSTEM, extra_body={"temperature": 0},
                  messages=[{"role": "user", "content": prompt}])
    unary = client.messages.create(**kwargs)
    upstreams.openai.reset()
    upstreams.claude.reset()
    with client.messages.stream(**kwargs) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events
    assert events.index("content_block_start") < events.index("content_block_stop")
    assert events.count("message_delta") == 1
    assert final.stop_reason == "end_turn"
    assert text_of(final) == text_of(unary)
    assert final.usage.output_tokens > 0
    assert final.model == MODEL
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         max_tokens=200, temperature=0)
    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body
        assert sent["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_round_trip(gw, upstreams, nonce, provider, stream):
    client = anthropic_client(gw, provider)
    prompt = f"What is the weather in Paris {nonce}"
    messages = [{"role": "user", "content": prompt}]
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=300, messages=messages,
                                    tools=TOOLS) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model=MODEL, max_tokens=300, messages=messages,
                                       tools=TOOLS)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.id
    assert use.input == expected_tool_args(provider)

    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body
        assert sent["tools"] == [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather for a city",
            "parameters": WEATHER_SCHEMA}}]

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "sunny, 21C"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=300, messages=messages, tools=TOOLS)
    assert second.stop_reason == "end_turn"
    assert not [b for b in second.content if b.type == "tool_use"]
    assert text_of(second).startswith(expected_tool_answer_start(provider, prompt, "sunny, 21C"))

    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        calls = sent[1]["tool_calls"]
        assert len(calls) == 1 and calls[0]["id"] == use.id and calls[0]["type"] == "function"
        assert calls[0]["function"]["name"] == "get_weather"
        assert json.loads(calls[0]["function"]["arguments"]) == use.input
        assert sent[2]["tool_call_id"] == use.id and "sunny, 21C" in json.dumps(sent[2]["content"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_result_with_text_keeps_the_text(gw, upstreams, nonce, provider):
    """A user turn with a tool_result and extra text loses neither."""
    client = anthropic_client(gw, provider)
    prompt = f"Weather in Rome {nonce}"
    first = client.messages.create(model=MODEL, max_tokens=300, tools=TOOLS,
                                   messages=[{"role": "user", "content": prompt}])
    use = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(model=MODEL, max_tokens=300, tools=TOOLS, messages=[
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "rainy"},
            {"type": "text", "text": "Also, is it windy?"}]},
    ])
    # The text after the result makes the last turn a user question again,
    # so mock and openai-custom may call the tool again; what matters is
    # that the request converts and that nothing is dropped.
    assert second.stop_reason in ("end_turn", "tool_use")
    if provider == "claude-custom":
        assert text_of(second) == "claude tool result: rainy"
    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert any(m["role"] == "tool" and "rainy" in json.dumps(m["content"]) for m in sent)
        assert "Also, is it windy?" in json.dumps([m for m in sent if m["role"] == "user"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_models_list(gw, upstreams, provider):
    page = anthropic_client(gw, provider).models.list()
    ids = {m.id for m in page.data}
    assert expected_models(provider) <= ids
    assert all(m.type == "model" for m in page.data)
    raw = gw.request("GET", f"/{provider}/v1/models",
                     headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    assert raw.status == 200
    body = raw.json()
    assert isinstance(body["data"], list) and "has_more" in body
    assert all(m["type"] == "model" and m["id"] for m in body["data"])
    if provider == "claude-custom":
        rec = upstreams.claude.last("/v1/models")
        assert rec.headers.get("x-api-key") == CLAUDE_UPSTREAM_KEY


@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_tokens(gw, upstreams, provider):
    client = anthropic_client(gw, provider)
    small = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}])
    big = client.messages.count_tokens(
        model=MODEL, system="You are a helpful assistant with many rules.", tools=TOOLS,
        messages=[{"role": "user", "content": "word " * 400}])
    assert small.input_tokens > 0
    assert big.input_tokens > small.input_tokens + 100


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_wrong_key_is_authentication_error(gw, upstreams, provider):
    client = anthropic_client(gw, provider, key="sk-ant-wrong")
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model=MODEL, max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    body = e.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_json_is_400_in_anthropic_shape(gw, upstreams, provider):
    r = gw.request("POST", f"/{provider}/v1/messages", body=b'{"model": "x", "max_tokens": ',
                   headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    assert r.status == 400
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_unknown_route_is_404_in_anthropic_shape(gw, provider):
    with pytest.raises(anthropic.NotFoundError) as e:
        anthropic_client(gw, provider).get("/v1/no/such/endpoint", cast_to=object)
    body = e.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["message"]
