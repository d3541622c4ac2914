"""The official SDKs streaming with tool calls through the three OAuth
providers (issue 3): gemini-cli, kiro-api and qwen-api, each in front of a
mock of its real upstream (oauth_upstreams.py: Code Assist with its
``{"response": ...}`` wrapping, Kiro's binary AWS event stream, Qwen's
OpenAI-compatible SSE with the dummy ``ext`` tool) and its token endpoint.

tests/oauth_providers.rs covers the same providers with raw HTTP from
inside the crate; this suite proves what a user actually runs: the release
binary, configured by flags and a YAML file, driven by the ``openai``,
``anthropic`` and ``google-genai`` SDKs. For each provider:

* openai, streamed with ``get_weather``: the text, exactly one tool call
  (no ``ext`` for Qwen) with arguments ``{"city": "Paris"}``, finish reason
  ``tool_calls``, one usage chunk; and unary, plain and with the tool;
* anthropic ``messages.stream()`` with the tool: a ``tool_use`` block with
  input ``{"city": "Paris"}``, stop reason ``tool_use``; then the
  ``tool_result`` sent back arrives in the upstream's own wire shape
  (functionResponse, toolResults, role ``tool``) and the answer is text;
* google-genai streamed with a function declaration;
* an expired access token: one refresh at the mock token endpoint, the
  request succeeds with the new token, the credentials file is rewritten
  (new token, mode 0600, no temporary file left) and ``/health`` reports
  the refresh without leaking a token.

For Kiro every streamed test also checks that text reaches the client
while the upstream is still in the middle of a tool frame (the mock holds
the rest until the client has seen the text): the gateway streams, and
decodes frames split across reads.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from google.genai import types

from oauth_upstreams import CodeAssistUpstream, KiroUpstream, OAuthUpstream, QwenUpstream
from support import (
    API_KEY,
    Gateway,
    anthropic_client,
    gemini_client,
    openai_client,
    openai_text,
)

pytestmark = pytest.mark.timeout(60)

OAUTH_PROVIDERS = ["gemini-cli", "kiro-api", "qwen-api"]
MODELS = {"gemini-cli": "gemini-2.5-flash", "kiro-api": "claude-sonnet-4-6",
          "qwen-api": "qwen3-coder-plus"}
PROJECT = "mock-project-4711"
VALID = {"gemini-cli": "ya29.valid", "kiro-api": "aoa-valid", "qwen-api": "qa-valid"}
EXPIRED = {"gemini-cli": "ya29.expired", "kiro-api": "aoa-expired", "qwen-api": "qa-expired"}
PROMPT = "What is the weather in Paris?"
PARIS = {"city": "Paris"}
TOOL_RESULT = "Sunny, 22 C"

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
OPENAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": WEATHER_PARAMS}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
                    "input_schema": WEATHER_PARAMS}]
GENAI_TOOL_CONFIG = types.GenerateContentConfig(
    tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", description="Current weather for a city",
        parameters=types.Schema(type=types.Type.OBJECT, required=["city"], properties={
            "city": types.Schema(type=types.Type.STRING, description="City name")}))])],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
)


# ---- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth_servers():
    servers = {
        "gemini-cli": CodeAssistUpstream(VALID["gemini-cli"], PROJECT),
        "kiro-api": KiroUpstream(VALID["kiro-api"]),
        "qwen-api": QwenUpstream(VALID["qwen-api"]),
    }
    yield servers
    for s in servers.values():
        s.close()


@pytest.fixture
def oauth_up(oauth_servers) -> dict[str, OAuthUpstream]:
    """The mocks, with empty request logs and refresh counters."""
    for s in oauth_servers.values():
        s.reset()
    yield oauth_servers
    for s in oauth_servers.values():
        s.reset()


@dataclass
class OAuthGateway:
    """A gateway serving one OAuth provider, its mock and credentials file."""

    gw: Gateway
    provider: str
    up: OAuthUpstream
    creds: Path

    @property
    def model(self) -> str:
        return MODELS[self.provider]

    def hold(self):
        """For Kiro, a gate the mock waits on mid tool frame; else None."""
        return self.up.hold() if isinstance(self.up, KiroUpstream) else None


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def credentials(provider: str, up: OAuthUpstream, expired: bool) -> dict:
    """A credentials file as each provider's own login tool writes it."""
    expiry = now_ms() - 60_000 if expired else now_ms() + 3_600_000
    token = (EXPIRED if expired else VALID)[provider]
    if provider == "gemini-cli":
        return {"access_token": token, "refresh_token": "1//gemini-refresh",
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "token_type": "Bearer", "expiry_date": expiry}
    if provider == "kiro-api":
        return {"accessToken": token, "refreshToken": "aor-kiro-refresh", "expiresAt": iso(expiry),
                "authMethod": "social", "provider": "Github",
                "profileArn": KiroUpstream.PROFILE_ARN, "region": "us-east-1"}
    return {"access_token": token, "refresh_token": "qr-qwen-refresh", "token_type": "Bearer",
            "resource_url": up.root, "expiry_date": expiry}


@pytest.fixture
def start_oauth(start_gateway, oauth_up, tmp_path):
    """Factory: ``start_oauth(provider, expired=False) -> OAuthGateway``, the
    binary with only ``provider`` enabled, pointed at its mock."""

    def start(provider: str, expired: bool = False) -> OAuthGateway:
        up = oauth_up[provider]
        creds = tmp_path / f"{provider}-creds.json"
        write_private(creds, json.dumps(credentials(provider, up, expired), indent=2))
        # The token endpoints are config-file-only keys.
        section, keys = {
            "gemini-cli": ("gemini", {"token_url": f"{up.root}/token"}),
            "kiro-api": ("kiro", {"refresh_url": f"{up.root}/refreshToken",
                                  "refresh_idc_url": f"{up.root}/oidc/{{region}}/token"}),
            "qwen-api": ("qwen", {"token_url": f"{up.root}/api/v1/oauth2/token"}),
        }[provider]
        config = tmp_path / "aiproxy.yaml"
        config.write_text(f"{section}:\n" + "".join(
            f"  {k}: {json.dumps(v)}\n" for k, v in keys.items()))
        flags = {
            "gemini-cli": ["--gemini-oauth-creds-file", str(creds), "--project-id", PROJECT,
                           "--gemini-base-url", up.root],
            "kiro-api": ["--kiro-oauth-creds-file", str(creds), "--kiro-base-url", up.root],
            "qwen-api": ["--qwen-oauth-creds-file", str(creds), "--qwen-base-url", up.root],
        }[provider]
        # No cache and no retries: every client request reaches the mock
        # exactly once, so request and refresh counts are exact.
        gw = start_gateway("--config", str(config), "--api-key", API_KEY,
                           "--model-provider", provider, "--cache-enabled=false",
                           "--request-max-retries", "0", *flags)
        return OAuthGateway(gw, provider, up, creds)

    return start


# ---- what the upstream must have received ----------------------------------


def last_generation(o: OAuthGateway):
    gens = o.up.generations()
    assert gens, f"{o.provider}: the upstream saw no generation request"
    return gens[-1]


def assert_tool_request(o: OAuthGateway, *, stream: bool):
    """The upstream got one generation request offering get_weather, in its
    own wire shape, with the provider's headers and the right token."""
    gens = o.up.generations()
    assert len(gens) == 1, [g.path for g in gens]
    rec = gens[0]
    assert rec.headers.get("authorization") == f"Bearer {VALID[o.provider]}"
    assert API_KEY not in json.dumps(rec.headers), "client key forwarded upstream"
    body = rec.body
    if o.provider == "gemini-cli":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        assert rec.path == f"/v1internal:{method}"
        assert body["model"] == o.model and body["project"] == PROJECT
        assert rec.headers["user-agent"].startswith("GeminiCLI/"), rec.headers
        decls = body["request"]["tools"][0]["functionDeclarations"]
        assert [d["name"] for d in decls] == ["get_weather"]
        schema = decls[0].get("parametersJsonSchema") or decls[0].get("parameters")
        assert str(schema["properties"]["city"]["type"]).lower() == "string", decls
        assert body["request"]["contents"][-1]["parts"][-1]["text"] == PROMPT
    elif o.provider == "kiro-api":
        assert rec.path == "/generateAssistantResponse"
        assert body["profileArn"] == KiroUpstream.PROFILE_ARN
        current = body["conversationState"]["currentMessage"]["userInputMessage"]
        assert current["modelId"] == "claude-sonnet-4.6"
        assert current["content"] == PROMPT
        specs = [t["toolSpecification"] for t in current["userInputMessageContext"]["tools"]]
        assert [s["name"] for s in specs] == ["get_weather"]
        schema = specs[0]["inputSchema"]["json"]
        assert schema["type"] == "object" and schema["properties"]["city"]["type"] == "string"
        assert rec.headers.get("x-amzn-kiro-agent-mode") == "vibe"
    else:
        assert rec.path == "/v1/chat/completions"
        assert body["model"] == o.model
        assert bool(body.get("stream")) is stream
        names = [t["function"]["name"] for t in body["tools"]]
        assert names == ["ext", "get_weather"], "the dummy ext tool comes first"
        params = body["tools"][1]["function"]["parameters"]
        assert params["type"] == "object" and params["properties"]["city"]["type"] == "string"
        assert rec.headers.get("x-dashscope-authtype") == "qwen-oauth"
        assert body["messages"][-1]["role"] == "user"
        assert openai_text(body["messages"][-1]["content"]) == PROMPT


def assert_tool_result_request(o: OAuthGateway, use_id: str):
    """The follow-up turn reached the upstream with the call and its result
    in the upstream's own shape."""
    body = last_generation(o).body
    if o.provider == "gemini-cli":
        contents = body["request"]["contents"]
        assert [c["role"] for c in contents] == ["user", "model", "user"]
        calls = [p["functionCall"] for p in contents[1]["parts"] if "functionCall" in p]
        assert calls == [{"name": "get_weather", "args": PARIS}]
        responses = [p["functionResponse"] for p in contents[2]["parts"]
                     if "functionResponse" in p]
        assert len(responses) == 1 and responses[0]["name"] == "get_weather"
        assert TOOL_RESULT in json.dumps(responses[0]["response"])
    elif o.provider == "kiro-api":
        state = body["conversationState"]
        assistant = state["history"][-1]["assistantResponseMessage"]
        assert assistant["toolUses"] == [{"toolUseId": use_id, "name": "get_weather",
                                          "input": PARIS}]
        current = state["currentMessage"]["userInputMessage"]
        assert current["userInputMessageContext"]["toolResults"] == [
            {"toolUseId": use_id, "status": "success", "content": [{"text": TOOL_RESULT}]}]
    else:
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
        calls = msgs[1]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather"], "no ext in history"
        assert calls[0]["id"] == use_id
        assert json.loads(calls[0]["function"]["arguments"]) == PARIS
        assert msgs[2]["tool_call_id"] == use_id
        assert TOOL_RESULT in json.dumps(msgs[2]["content"])


def check_hold(o: OAuthGateway, gate) -> None:
    if gate is not None:
        assert gate.is_set(), "the client never saw text before the tool frame completed"
        assert not o.up.gate_timed_out, "text was held back until the tool frame completed"


# ---- openai ----------------------------------------------------------------


@pytest.mark.parametrize("provider", OAUTH_PROVIDERS)
def test_openai_stream_with_tool(start_oauth, provider):
    o = start_oauth(provider)
    gate = o.hold()
    stream = openai_client(o.gw, provider).chat.completions.create(
        model=o.model, messages=[{"role": "user", "content": PROMPT}], tools=OPENAI_TOOLS,
        stream=True, stream_options={"include_usage": True})
    text, calls, finishes, usage = "", {}, [], []
    for chunk in stream:
        if chunk.usage:
            usage.append(chunk.usage)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                text += delta.content
                if gate is not None:
                    gate.set()
            for tc in delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                if tc.function:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert text == o.up.PREAMBLE
    assert list(calls) == [0], f"exactly one tool call, index 0: {calls}"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == PARIS
    assert finishes == ["tool_calls"]
    assert len(usage) == 1 and usage[0].completion_tokens > 0, usage
    check_hold(o, gate)
    assert_tool_request(o, stream=True)


@pytest.mark.parametrize("provider", OAUTH_PROVIDERS)
def test_openai_unary_plain_and_with_tool(start_oauth, provider):
    o = start_oauth(provider)
    client = openai_client(o.gw, provider)
    prompt = "Say hello to the gateway"
    r = client.chat.completions.create(model=o.model,
                                       messages=[{"role": "user", "content": prompt}])
    assert r.choices[0].message.content == f"{o.up.label} says: {prompt}"
    assert r.choices[0].finish_reason == "stop"
    assert not r.choices[0].message.tool_calls
    assert r.model == o.model
    o.up.reset()

    r = client.chat.completions.create(
        model=o.model, messages=[{"role": "user", "content": PROMPT}], tools=OPENAI_TOOLS)
    msg = r.choices[0].message
    assert msg.content == o.up.PREAMBLE
    assert [c.function.name for c in msg.tool_calls or []] == ["get_weather"], msg
    assert json.loads(msg.tool_calls[0].function.arguments) == PARIS
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.usage.total_tokens > 0
    assert_tool_request(o, stream=False)


# ---- anthropic -------------------------------------------------------------


@pytest.mark.parametrize("provider", OAUTH_PROVIDERS)
def test_anthropic_stream_tool_use_then_tool_result(start_oauth, provider):
    o = start_oauth(provider)
    client = anthropic_client(o.gw, provider)
    messages = [{"role": "user", "content": PROMPT}]
    gate = o.hold()
    with client.messages.stream(model=o.model, max_tokens=256, messages=messages,
                                tools=ANTHROPIC_TOOLS) as s:
        events = []
        for event in s:
            events.append(event.type)
            if event.type == "text" and gate is not None:
                gate.set()
        first = s.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop", events
    assert first.stop_reason == "tool_use"
    assert "".join(b.text for b in first.content if b.type == "text") == o.up.PREAMBLE
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1, first.content
    use = uses[0]
    assert use.name == "get_weather" and use.id and use.input == PARIS
    check_hold(o, gate)
    assert_tool_request(o, stream=True)

    o.up.reset()
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": TOOL_RESULT}]},
    ]
    with client.messages.stream(model=o.model, max_tokens=256, messages=messages,
                                tools=ANTHROPIC_TOOLS) as s:
        second = s.get_final_message()
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == f"{o.up.label} tool result: {TOOL_RESULT}"
    assert_tool_result_request(o, use.id)


# ---- google-genai ----------------------------------------------------------


@pytest.mark.parametrize("provider", OAUTH_PROVIDERS)
def test_genai_stream_with_function_call(start_oauth, provider):
    o = start_oauth(provider)
    gate = o.hold()
    text, calls, finish = "", [], None
    for chunk in gemini_client(o.gw, provider).models.generate_content_stream(
            model=o.model, contents=PROMPT, config=GENAI_TOOL_CONFIG):
        for cand in chunk.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                if part.text:
                    text += part.text
                    if gate is not None:
                        gate.set()
                if part.function_call:
                    calls.append(part.function_call)
            finish = cand.finish_reason or finish
    assert text == o.up.PREAMBLE
    assert [c.name for c in calls] == ["get_weather"]
    assert dict(calls[0].args) == PARIS
    assert finish == types.FinishReason.STOP
    check_hold(o, gate)
    assert_tool_request(o, stream=True)


# ---- token refresh ---------------------------------------------------------


TOKEN_FIELD = {"gemini-cli": "access_token", "kiro-api": "accessToken",
               "qwen-api": "access_token"}


def saved_expiry_ms(provider: str, saved: dict) -> int:
    if provider == "kiro-api":
        return int(datetime.strptime(saved["expiresAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
                   .replace(tzinfo=timezone.utc).timestamp() * 1000)
    return int(saved["expiry_date"])


@pytest.mark.parametrize("provider", OAUTH_PROVIDERS)
def test_expired_token_is_refreshed_once_and_saved(start_oauth, provider):
    o = start_oauth(provider, expired=True)
    client = openai_client(o.gw, provider)
    for prompt in ("first question", "second question"):
        r = client.chat.completions.create(model=o.model,
                                           messages=[{"role": "user", "content": prompt}])
        assert r.choices[0].message.content == f"{o.up.label} says: {prompt}"

    fresh = f"{o.up.token_prefix}-fresh1"
    assert o.up.refreshes == 1, "exactly one refresh for two requests"
    assert len(o.up.requests_to(o.up.token_path)) == 1
    gens = o.up.generations()
    assert [g.headers.get("authorization") for g in gens] == [f"Bearer {fresh}"] * 2, \
        "the expired token was never sent"

    saved = json.loads(o.creds.read_text())
    assert saved[TOKEN_FIELD[provider]] == fresh
    assert saved_expiry_ms(provider, saved) > now_ms() + 50 * 60_000
    if provider == "gemini-cli":
        assert saved["refresh_token"] == "1//gemini-refresh", "kept when not returned"
    elif provider == "kiro-api":
        assert saved["refreshToken"] == "aor-kiro-refresh-2"
        assert saved["profileArn"] == KiroUpstream.PROFILE_ARN
        assert saved["authMethod"] == "social", "other fields kept"
    else:
        assert saved["refresh_token"] == "qr-qwen-refresh-2"
        assert saved["resource_url"] == o.up.root
    assert stat.S_IMODE(o.creds.stat().st_mode) == 0o600
    leftovers = [p.name for p in o.creds.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "no temporary file left beside the credentials"

    health = o.gw.request("GET", "/health", headers={"Authorization": f"Bearer {API_KEY}"})
    assert health.status == 200
    cred = health.json()["providers"][0]["instances"][0]["credentials"]
    assert cred["state"] == "valid" and cred["refreshes"] == 1
    assert cred["last_error"] is None
    assert fresh not in health.text and EXPIRED[provider] not in health.text
