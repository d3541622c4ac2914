"""The official OpenAI Python SDK against aiproxy, for every provider.

For mock, openai-custom (OpenAI-compatible mock upstream, passthrough) and
claude-custom (Anthropic mock upstream, OpenAI↔Anthropic conversion):
non-streamed and streamed chat (one finish_reason, usage chunk with
``stream_options.include_usage``, streamed text equal to the unary text),
``max_tokens`` truncation, the tools round trip (tool call → tool result →
text answer, unary and streamed), ``models.list()``, a wrong key
(AuthenticationError), invalid JSON (400 in OpenAI's error shape) and an
unknown route (404 in OpenAI's error shape). Each test also checks what the
upstream received: key, model, system prompt, temperature 0, max_tokens and
converted tool schemas.
"""

import json

import openai
import pytest

from support import (
    API_KEY,
    OPENAI_UPSTREAM_KEY,
    PROVIDERS,
    WEATHER_SCHEMA,
    assert_upstream_call,
    claude_text,
    expected_answer_start,
    expected_models,
    expected_tool_answer_start,
    expected_tool_args,
    openai_client,
)

pytestmark = pytest.mark.timeout(60)

MODEL = "gpt-4o-mini"
SYSTEM = "You are terse."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": WEATHER_SCHEMA}}]


def ask(prompt):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_unary(gw, upstreams, nonce, provider):
    prompt = f"What is the capital of France {nonce}"
    r = openai_client(gw, provider).chat.completions.create(
        model=MODEL, messages=ask(prompt), temperature=0, max_tokens=200)
    assert r.object == "chat.completion"
    assert r.id
    assert r.model == MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith(expected_answer_start(provider, prompt))
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         max_tokens=200, temperature=0)
    if provider == "claude-custom":
        # The system message left the message list for Anthropic's `system`.
        assert "[system: You are terse.]" in choice.message.content


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_max_tokens_truncates(gw, upstreams, nonce, provider):
    r = openai_client(gw, provider).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"Count to ten {nonce}"}],
        max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert len(r.choices[0].message.content.split()) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_stream(gw, upstreams, nonce, provider):
    client = openai_client(gw, provider)
    prompt = f"Describe a sunset over the sea {nonce}"
    unary = client.chat.completions.create(model=MODEL, messages=ask(prompt), temperature=0)
    upstreams.openai.reset()
    upstreams.claude.reset()
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ask(prompt), temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert chunks, "empty stream"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == unary.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    assert with_choices[-1].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None, "include_usage set but no usage chunk at the end"
    assert chunks[-1].choices == []
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         temperature=0)
    up = upstreams.for_provider(provider)
    if up is not None:
        assert up.requests[-1].body["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_round_trip(gw, upstreams, nonce, provider, stream):
    client = openai_client(gw, provider)
    prompt = f"What is the weather in Paris {nonce}"
    messages = [{"role": "user", "content": prompt}]
    if stream:
        with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as s:
            first = s.get_final_completion()
    else:
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == expected_tool_args(provider)

    if provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["tools"][0]["description"] == "Current weather for a city"
        assert sent["tools"][0]["input_schema"]["properties"] == WEATHER_SCHEMA["properties"]
        assert "function" not in sent["tools"][0]
    elif provider == "openai-custom":
        assert upstreams.openai.last("/v1/chat/completions").body["tools"] == TOOLS

    messages += [
        {"role": "assistant", "content": choice.message.content,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": call.function.name,
                                      "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    answer = second.choices[0]
    assert answer.finish_reason == "stop"
    assert not answer.message.tool_calls
    assert answer.message.content.startswith(
        expected_tool_answer_start(provider, prompt, "sunny, 21C"))

    if provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        tool_use = [b for b in sent[1]["content"] if b["type"] == "tool_use"]
        assert tool_use == [{"type": "tool_use", "id": call.id, "name": "get_weather",
                             "input": expected_tool_args(provider)}]
        result = [b for b in sent[2]["content"] if b["type"] == "tool_result"]
        assert len(result) == 1 and result[0]["tool_use_id"] == call.id
        assert "sunny, 21C" in json.dumps(result[0]["content"])
    elif provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_choice_none_gives_text(gw, upstreams, nonce, provider):
    r = openai_client(gw, provider).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"Weather in Oslo {nonce}"}],
        tools=TOOLS, tool_choice="none")
    assert r.choices[0].finish_reason == "stop"
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].message.content
    if provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body
        assert sent.get("tool_choice") == {"type": "none"} or "tools" not in sent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_models_list(gw, upstreams, provider):
    models = list(openai_client(gw, provider).models.list())
    ids = {m.id for m in models}
    assert expected_models(provider) <= ids
    others = set().union(*(expected_models(p) for p in PROVIDERS if p != provider))
    assert not (ids & others), "a provider prefix lists only that provider's models"
    assert all(m.object == "model" for m in models)
    if provider == "openai-custom":
        rec = upstreams.openai.last("/v1/models")
        assert rec.headers["authorization"] == f"Bearer {OPENAI_UPSTREAM_KEY}"


def test_models_list_without_prefix_lists_every_provider(gw, upstreams):
    ids = {m.id for m in openai_client(gw).models.list()}
    for provider in PROVIDERS:
        assert expected_models(provider) <= ids, provider


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_wrong_key_is_authentication_error(gw, upstreams, provider):
    client = openai_client(gw, provider, key="sk-wrong-key")
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    body = e.value.response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "authentication_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_json_is_400_in_openai_shape(gw, upstreams, provider):
    r = gw.request("POST", f"/{provider}/v1/chat/completions",
                   body=b'{"model": "gpt-4o-mini", "messages": [',
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 400
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_unknown_route_is_404_in_openai_shape(gw, provider):
    client = openai_client(gw, provider)
    with pytest.raises(openai.NotFoundError) as e:
        client.get("/no/such/endpoint", cast_to=object)
    body = e.value.response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    assert e.value.response.headers["content-type"].startswith("application/json")


def test_missing_messages_is_400(gw, upstreams, nonce):
    client = openai_client(gw, "claude-custom")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages="not a list")  # type: ignore
    assert e.value.response.json()["error"]["message"]
    assert upstreams.claude.requests == []


def test_multipart_user_content_reaches_claude_as_text(gw, upstreams, nonce):
    """A user message made of text parts reaches claude-custom as text blocks."""
    prompt_a, prompt_b = f"first part {nonce}", "second part"
    r = openai_client(gw, "claude-custom").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": prompt_a}, {"type": "text", "text": prompt_b}]}])
    sent = upstreams.claude.last("/v1/messages").body["messages"][0]
    assert prompt_a in claude_text(sent["content"]) and prompt_b in claude_text(sent["content"])
    assert r.choices[0].message.content.startswith("claude says:")
