"""The official Google Gen AI Python SDK (google-genai) against aiproxy, for
every provider.

All three providers speak another family than Gemini, so every test here is
cross-protocol: ``generate_content`` (text, finish reason, usage metadata;
system instruction, temperature 0 and maxOutputTokens reach the upstream as
system message/``system``, ``temperature`` and ``max_tokens``),
``maxOutputTokens`` truncation (MAX_TOKENS), ``generate_content_stream``
(SSE, chunks join to the unary text, last chunk STOP), the function-calling
round trip (functionDeclarations → functionCall → functionResponse → text,
unary and streamed; Gemini's upper-case schema types must reach the
upstreams as JSON Schema), ``models.list()`` and ``models.get()``, a wrong
key (ClientError 401 UNAUTHENTICATED), invalid JSON (400 INVALID_ARGUMENT)
and unknown routes/models (404 NOT_FOUND), all in Gemini's error shape.
"""

import json

import pytest
from google.genai import errors, types

from support import (
    API_KEY,
    PROVIDERS,
    assert_upstream_call,
    expected_answer_start,
    expected_models,
    expected_tool_answer_start,
    expected_tool_args,
    gemini_client,
)

pytestmark = pytest.mark.timeout(60)

MODEL = "gemini-2.5-flash"
SYSTEM = "You are terse."

WEATHER_DECL = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={
            "city": types.Schema(type=types.Type.STRING, description="City name"),
            "days": types.Schema(type=types.Type.INTEGER, description="Forecast length"),
        },
        required=["city"],
    ),
)
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


def tool_config(decl=WEATHER_DECL) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])],
                                       automatic_function_calling=NO_AFC)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generate_content(gw, upstreams, nonce, provider):
    prompt = f"What is the capital of France {nonce}"
    r = gemini_client(gw, provider).models.generate_content(
        model=MODEL, contents=prompt,
        config=types.GenerateContentConfig(system_instruction=SYSTEM, temperature=0,
                                           max_output_tokens=200))
    assert r.text.startswith(expected_answer_start(provider, prompt))
    cand = r.candidates[0]
    assert cand.content.role == "model"
    assert cand.finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert u.prompt_token_count > 0 and u.candidates_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         max_tokens=200, temperature=0)
    if provider != "mock":
        assert "[system: You are terse.]" in r.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_multi_turn_history(gw, upstreams, nonce, provider):
    prompt = f"And in Spain {nonce}"
    r = gemini_client(gw, provider).models.generate_content(model=MODEL, contents=[
        types.Content(role="user", parts=[types.Part(text="Capital of France?")]),
        types.Content(role="model", parts=[types.Part(text="Paris.")]),
        types.Content(role="user", parts=[types.Part(text=prompt)]),
    ])
    assert r.text.startswith(expected_answer_start(provider, prompt))
    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert "Paris." in json.dumps(sent[1])
    elif provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_output_tokens_truncates(gw, upstreams, nonce, provider):
    r = gemini_client(gw, provider).models.generate_content(
        model=MODEL, contents=f"Count to ten {nonce}",
        config=types.GenerateContentConfig(max_output_tokens=3))
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert len(r.text.split()) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generate_content_stream(gw, upstreams, nonce, provider):
    client = gemini_client(gw, provider)
    prompt = f"Describe a sunset over the sea {nonce}"
    config = types.GenerateContentConfig(system_instruction=SYSTEM, temperature=0)
    unary = client.models.generate_content(model=MODEL, contents=prompt, config=config)
    upstreams.openai.reset()
    upstreams.claude.reset()
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=prompt,
                                                        config=config))
    assert len(chunks) >= 2, "a stream of one chunk is not streaming"
    text = "".join(c.text or "" for c in chunks)
    assert text == unary.text
    finishes = [c.candidates[0].finish_reason for c in chunks
                if c.candidates and c.candidates[0].finish_reason]
    assert finishes == [types.FinishReason.STOP]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.candidates_token_count > 0
    assert_upstream_call(upstreams, provider, model=MODEL, system=SYSTEM, prompt=prompt,
                         temperature=0)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_function_calling_round_trip(gw, upstreams, nonce, provider, stream):
    client = gemini_client(gw, provider)
    prompt = f"What is the weather in Paris {nonce}"
    config = tool_config()
    if stream:
        chunks = list(client.models.generate_content_stream(model=MODEL, contents=prompt,
                                                            config=config))
        calls = [fc for c in chunks for fc in (c.function_calls or [])]
        model_parts = [p for c in chunks if c.candidates and c.candidates[0].content
                       for p in (c.candidates[0].content.parts or [])]
        model_turn = types.Content(role="model", parts=model_parts)
    else:
        r = client.models.generate_content(model=MODEL, contents=prompt, config=config)
        calls = r.function_calls or []
        model_turn = r.candidates[0].content
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.name == "get_weather"
    assert call.args == expected_tool_args(provider)

    if provider == "openai-custom":
        tool = upstreams.openai.last("/v1/chat/completions").body["tools"][0]
        assert tool["type"] == "function" and tool["function"]["name"] == "get_weather"
        params = tool["function"]["parameters"]
        assert params["type"] == "object"
        assert params["properties"]["city"]["type"] == "string"
        assert params["properties"]["days"]["type"] == "integer"
    elif provider == "claude-custom":
        tool = upstreams.claude.last("/v1/messages").body["tools"][0]
        assert tool["name"] == "get_weather"
        assert tool["input_schema"]["type"] == "object"
        assert tool["input_schema"]["properties"]["days"]["type"] == "integer"

    contents = [
        types.Content(role="user", parts=[types.Part(text=prompt)]),
        model_turn,
        types.Content(role="user", parts=[types.Part.from_function_response(
            name="get_weather", response={"result": "sunny, 21C"})]),
    ]
    second = client.models.generate_content(model=MODEL, contents=contents, config=config)
    assert not second.function_calls
    assert second.candidates[0].finish_reason == types.FinishReason.STOP
    if provider == "mock":
        assert second.text.startswith(expected_answer_start(provider, prompt))
    else:
        # The function response may arrive as its "result" or as JSON text.
        prefix = expected_tool_answer_start(provider, prompt, "")
        assert second.text.startswith(prefix) and "sunny, 21C" in second.text, second.text

    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        tc = sent[1]["tool_calls"][0]
        assert tc["function"]["name"] == "get_weather"
        assert json.loads(tc["function"]["arguments"]) == expected_tool_args(provider)
        assert sent[2]["tool_call_id"] == tc["id"]
        assert "sunny, 21C" in json.dumps(sent[2]["content"])
    elif provider == "claude-custom":
        sent = upstreams.claude.last("/v1/messages").body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        use = next(b for b in sent[1]["content"] if b["type"] == "tool_use")
        assert use["name"] == "get_weather" and use["input"] == expected_tool_args(provider)
        res = next(b for b in sent[2]["content"] if b["type"] == "tool_result")
        assert res["tool_use_id"] == use["id"]
        assert "sunny, 21C" in json.dumps(res["content"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_function_declaration_with_json_schema(gw, upstreams, nonce, provider):
    """``parameters_json_schema`` (plain JSON Schema) works like ``parameters``."""
    decl = types.FunctionDeclaration(
        name="lookup", description="Look something up",
        parameters_json_schema={"type": "object", "properties": {
            "query": {"type": "string"}, "exact": {"type": "boolean"}}, "required": ["query"]})
    r = gemini_client(gw, provider).models.generate_content(
        model=MODEL, contents=f"Find it {nonce}", config=tool_config(decl))
    assert [fc.name for fc in r.function_calls or []] == ["lookup"]
    assert r.function_calls[0].args["exact"] is True
    assert isinstance(r.function_calls[0].args["query"], str)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_function_calling_mode_none_gives_text(gw, upstreams, nonce, provider):
    config = tool_config()
    config.tool_config = types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE))
    r = gemini_client(gw, provider).models.generate_content(
        model=MODEL, contents=f"Weather in Oslo {nonce}", config=config)
    assert not r.function_calls
    assert r.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_models_list(gw, upstreams, provider):
    models = list(gemini_client(gw, provider).models.list())
    names = {m.name for m in models}
    assert {f"models/{m}" for m in expected_models(provider)} <= names
    others = set().union(*(expected_models(p) for p in PROVIDERS if p != provider))
    assert not (names & {f"models/{m}" for m in others})
    assert all("generateContent" in (m.supported_actions or []) for m in models)


def test_models_list_without_prefix_lists_every_provider(gw, upstreams):
    names = {m.name for m in gemini_client(gw).models.list()}
    for provider in PROVIDERS:
        assert {f"models/{m}" for m in expected_models(provider)} <= names


def test_models_get(gw):
    m = gemini_client(gw, "mock").models.get(model="mock-small")
    assert m.name == "models/mock-small"


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_wrong_key_is_401_unauthenticated(gw, upstreams, provider):
    client = gemini_client(gw, provider, key="AIza-wrong-key")
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model=MODEL, contents="hi")
    assert e.value.code == 401
    assert e.value.status == "UNAUTHENTICATED"
    body = e.value.response.json()
    assert body["error"]["code"] == 401 and body["error"]["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []
    with pytest.raises(errors.ClientError) as e:
        list(client.models.list())
    assert e.value.code == 401


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_json_is_400_invalid_argument(gw, upstreams, provider):
    r = gw.request("POST", f"/{provider}/v1beta/models/{MODEL}:generateContent",
                   body=b'{"contents": [{"parts": [', headers={"x-goog-api-key": API_KEY})
    assert r.status == 400
    err = r.json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT" and err["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_unknown_model_is_404_not_found(gw, provider):
    with pytest.raises(errors.ClientError) as e:
        gemini_client(gw, provider).models.get(model="no-such-model-anywhere")
    assert e.value.code == 404
    assert e.value.status == "NOT_FOUND"


@pytest.mark.parametrize("provider", [None, *PROVIDERS])
def test_unknown_route_is_404_in_gemini_shape(gw, provider):
    prefix = f"/{provider}" if provider else ""
    r = gw.request("GET", f"{prefix}/v1beta/no/such/endpoint", headers={"x-goog-api-key": API_KEY})
    assert r.status == 404
    err = r.json()["error"]
    assert err == {"code": 404, "message": err["message"], "status": "NOT_FOUND"}
    assert err["message"]
