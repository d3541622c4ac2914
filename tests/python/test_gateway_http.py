"""Gateway behaviour that is not one SDK's: authentication, provider
selection and CORS.

* Auth all four ways (``Authorization: Bearer``, ``x-api-key``,
  ``x-goog-api-key``, ``?key=``): the right key passes, a wrong or missing
  key is 401 in the protocol of the route; ``/health`` needs no key (its
  detail does).
* Provider selection: path prefix, ``Model-Provider`` header (any case),
  default provider (the first of ``--model-provider``), prefix beats header;
  AIClient-2-API's long ids (``openai-qwen-oauth``, ``claude-kiro-oauth``,
  ``gemini-cli-oauth``) and aiproxy names of providers that are not enabled
  are recognised as providers and refused with 400, while an unknown first
  segment is just an unknown route (404).
* CORS preflight: OPTIONS → 204 without auth, allowing the headers that
  browser-based OpenAI, Anthropic and Gemini clients send.
* Model lists: ``GET /v1/models`` answers in the shape of the client's
  headers (OpenAI, ``anthropic-version`` → Anthropic, ``x-goog-api-key`` →
  Gemini); the Gemini SDK works on the ``/v1/`` routes too; one model can
  be retrieved (404 for an unknown one).
"""

import anthropic
import openai
import pytest

from support import (
    API_KEY,
    anthropic_client,
    expected_answer_start,
    openai_client,
    provider_args,
)

pytestmark = pytest.mark.timeout(60)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def chat_body(nonce):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {nonce}"}]}


AUTH_WAYS = {
    "bearer": lambda k: ({"Authorization": f"Bearer {k}"}, ""),
    "x-api-key": lambda k: ({"x-api-key": k}, ""),
    "x-goog-api-key": lambda k: ({"x-goog-api-key": k}, ""),
    "query-key": lambda k: ({}, f"?key={k}"),
}


@pytest.mark.parametrize("way", list(AUTH_WAYS))
def test_auth_each_way(gw, upstreams, nonce, way):
    headers, query = AUTH_WAYS[way](API_KEY)
    ok = gw.request("POST", f"/v1/chat/completions{query}", body=chat_body(nonce), headers=headers)
    assert ok.status == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"]

    headers, query = AUTH_WAYS[way](API_KEY + "x")
    bad = gw.request("POST", f"/v1/chat/completions{query}", body=chat_body(nonce), headers=headers)
    assert bad.status == 401
    assert bad.json()["error"]["type"] == "authentication_error"

    headers, query = AUTH_WAYS[way](API_KEY[:-1])
    prefix_only = gw.request("GET", f"/v1/models{query}", headers=headers)
    assert prefix_only.status == 401


def test_missing_key_is_401_in_each_protocol(gw, upstreams):
    r = gw.request("POST", "/v1/chat/completions", body=CHAT)
    assert r.status == 401 and r.json()["error"]["type"] == "authentication_error"
    r = gw.request("POST", "/v1/messages", body={"model": "m", "max_tokens": 5, "messages": []},
                   headers={"anthropic-version": "2023-06-01"})
    assert r.status == 401
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    r = gw.request("POST", "/v1beta/models/gemini-2.5-flash:generateContent",
                   body={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status == 401
    assert r.json()["error"]["status"] == "UNAUTHENTICATED" and r.json()["error"]["code"] == 401
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


def test_bearer_scheme_must_be_bearer(gw):
    r = gw.request("GET", "/v1/models", headers={"Authorization": f"Basic {API_KEY}"})
    assert r.status == 401


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(gw, scheme):
    r = gw.request("GET", "/v1/models", headers={"Authorization": f"{scheme} {API_KEY}"})
    assert r.status == 200, r.text


def test_health_needs_no_key(gw):
    r = gw.request("GET", "/health")
    assert r.status == 200
    assert r.json() == {"status": "healthy", "ready": True}, "no detail without a key"
    body = gw.request("GET", "/health", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert body["status"] == "healthy"
    assert body["provider"] == "mock"


# ---- provider selection ----------------------------------------------------


@pytest.mark.parametrize("provider", ["mock", "openai-custom", "claude-custom"])
def test_path_prefix_selects_provider(gw, upstreams, nonce, provider):
    r = gw.request("POST", f"/{provider}/v1/chat/completions", body=chat_body(nonce),
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    assert text.startswith(expected_answer_start(provider, f"hello {nonce}"))
    assert len(upstreams.openai.requests_to("/v1/chat/completions")) == \
        (provider == "openai-custom")
    assert len(upstreams.claude.requests_to("/v1/messages")) == (provider == "claude-custom")


def test_default_provider_is_first_enabled(gw, upstreams, nonce):
    r = openai_client(gw).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {nonce}"}])
    assert r.choices[0].message.content.startswith(expected_answer_start("mock", f"hi {nonce}"))
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


def test_default_provider_follows_flag_order(start_gateway, upstreams, nonce):
    g = start_gateway(*provider_args(upstreams.openai, upstreams.claude,
                                     "claude-custom,mock,openai-custom"))
    health = g.request("GET", "/health", headers={"Authorization": f"Bearer {API_KEY}"})
    assert health.json()["provider"] == "claude-custom"
    m = anthropic_client(g).messages.create(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": f"hi {nonce}"}])
    assert m.content[0].text.startswith(f"claude says: hi {nonce}")
    assert len(upstreams.claude.requests_to("/v1/messages")) == 1


@pytest.mark.parametrize("header_name", ["Model-Provider", "model-provider", "MODEL-PROVIDER"])
@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_model_provider_header(gw, upstreams, nonce, provider, header_name):
    client = openai_client(gw, default_headers={header_name: provider})
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {nonce}"}])
    assert r.choices[0].message.content.startswith(expected_answer_start(provider, f"hi {nonce}"))
    up = upstreams.for_provider(provider)
    assert len(up.requests) == 1


def test_path_prefix_beats_header(gw, upstreams, nonce):
    client = openai_client(gw, "mock", default_headers={"Model-Provider": "claude-custom"})
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {nonce}"}])
    assert r.choices[0].message.content.startswith("Mock answer to")
    assert upstreams.claude.requests == []


@pytest.mark.parametrize("value", ["kiro-api", "qwen-api", "gemini-cli", "no-such-provider"])
def test_header_naming_unusable_provider_is_400(gw, upstreams, value):
    client = openai_client(gw, default_headers={"Model-Provider": value})
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hi"}])
    assert value in e.value.response.json()["error"]["message"]
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


@pytest.mark.parametrize("prefix", ["openai-qwen-oauth", "qwen-api"])
def test_disabled_provider_prefix_is_400_openai(gw, upstreams, prefix):
    with pytest.raises(openai.BadRequestError) as e:
        openai_client(gw, prefix).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.json()["error"]["message"]


@pytest.mark.parametrize("prefix", ["claude-kiro-oauth", "kiro-api"])
def test_disabled_provider_prefix_is_400_anthropic(gw, upstreams, prefix):
    with pytest.raises(anthropic.BadRequestError) as e:
        anthropic_client(gw, prefix).messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    body = e.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("prefix", ["gemini-cli-oauth", "gemini-cli"])
def test_disabled_provider_prefix_is_400_gemini(gw, upstreams, prefix):
    r = gw.request("POST", f"/{prefix}/v1beta/models/gemini-2.5-flash:generateContent",
                   body={"contents": [{"parts": [{"text": "hi"}]}]},
                   headers={"x-goog-api-key": API_KEY})
    assert r.status == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_unknown_first_segment_is_not_a_provider(gw):
    r = gw.request("POST", "/not-a-provider/v1/chat/completions", body=CHAT,
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 404
    assert "error" in r.json()


def test_enabled_provider_prefix_works_for_model_list(start_gateway, upstreams):
    g = start_gateway("--model-provider", "mock")
    ids = {m.id for m in openai_client(g, "mock").models.list()}
    assert "mock-small" in ids
    r = g.request("GET", "/openai-custom/v1/models")
    assert r.status == 400, "openai-custom is not enabled on this gateway"


# ---- CORS ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions",
                                  "/v1beta/models/gemini-2.5-flash:generateContent",
                                  "/claude-custom/v1/messages"])
def test_cors_preflight(gw, path):
    r = gw.request("OPTIONS", path, headers={
        "Origin": "http://localhost:5173",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key,anthropic-version",
    })
    assert r.status == 204
    assert r.body == b""
    assert r.headers.get("access-control-allow-origin") in ("*", "http://localhost:5173")
    assert "POST" in r.headers.get("access-control-allow-methods", "")
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "anthropic-version", "content-type"} <= allowed


def test_cors_preflight_default_allow_list(gw):
    r = gw.request("OPTIONS", "/v1/messages", headers={"Origin": "http://example.test"})
    assert r.status == 204
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "anthropic-version", "x-goog-api-key",
            "content-type"} <= allowed


def test_cors_header_on_normal_answers(gw, nonce):
    r = gw.request("POST", "/v1/chat/completions", body=chat_body(nonce),
                   headers={"Authorization": f"Bearer {API_KEY}", "Origin": "http://x.test"})
    assert r.status == 200
    assert r.headers.get("access-control-allow-origin") == "http://x.test"
    assert r.headers.get("vary") == "Origin"


def test_origins_not_listed_get_no_cors_headers(gw, nonce):
    r = gw.request("OPTIONS", "/v1/messages", headers={
        "Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
    assert r.status == 204
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-headers" not in r.headers
    r = gw.request("POST", "/v1/chat/completions", body=chat_body(nonce),
                   headers={"Authorization": f"Bearer {API_KEY}", "Origin": "http://evil.test"})
    assert r.status == 200
    assert "access-control-allow-origin" not in r.headers


def test_a_simple_cross_site_request_is_refused_without_reading_it(gw, nonce):
    """A page can send text/plain without a preflight; inference insists on JSON."""
    r = gw.request("POST", "/v1/chat/completions", body=chat_body(nonce),
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/plain"})
    assert r.status == 415
    assert "application/json" in r.json()["error"]["message"]


# ---- model lists: one path, three shapes; Gemini routes also under /v1 ------


def test_v1_models_shape_follows_client_headers(gw):
    openai_shape = gw.request("GET", "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    assert openai_shape.status == 200
    body = openai_shape.json()
    assert body["object"] == "list" and all(m["object"] == "model" for m in body["data"])

    anthropic_shape = gw.request("GET", "/v1/models", headers={
        "x-api-key": API_KEY, "anthropic-version": "2023-06-01"})
    body = anthropic_shape.json()
    assert "object" not in body and all(m["type"] == "model" for m in body["data"])

    gemini_shape = gw.request("GET", "/v1/models", headers={"x-goog-api-key": API_KEY})
    body = gemini_shape.json()
    assert all(m["name"].startswith("models/") for m in body["models"])


def test_gemini_sdk_on_v1_routes(gw, nonce):
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=API_KEY, http_options=types.HttpOptions(
        base_url=f"{gw.url}/mock", api_version="v1", timeout=30_000))
    try:
        r = client.models.generate_content(model="gemini-2.5-flash", contents=f"hi {nonce}")
        assert r.text.startswith(expected_answer_start("mock", f"hi {nonce}"))
        assert "models/mock-small" in {m.name for m in client.models.list()}
    finally:
        client.close()


def test_retrieve_one_model(gw):
    m = openai_client(gw, "mock").models.retrieve("mock-small")
    assert m.id == "mock-small" and m.object == "model"
    a = anthropic_client(gw, "mock").models.retrieve("mock-small")
    assert a.id == "mock-small" and a.type == "model"
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, "mock").models.retrieve("gpt-nonexistent")


def test_without_a_key_only_names_dns_cannot_rebind_are_served(start_gateway, nonce):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own name."""
    g = start_gateway("--model-provider", "mock")
    r = g.request("POST", "/v1/chat/completions", body=chat_body(nonce),
                  headers={"Host": "evil.example:%d" % g.port})
    assert r.status == 403
    assert "Host" in r.json()["error"]["message"]
    for host in ("localhost", "127.0.0.1", "api.localhost"):
        r = g.request("POST", "/v1/chat/completions", body=chat_body(nonce),
                      headers={"Host": f"{host}:{g.port}"})
        assert r.status == 200, (host, r.body)
