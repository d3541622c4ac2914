"""Upstream errors relayed to SDK clients in their own protocol.

The mock upstreams are scripted to answer with the providers' real error
bodies:
* OpenAI 429 with ``Retry-After`` reaches the OpenAI SDK as RateLimitError,
  status, body and Retry-After intact (same family: forwarded unchanged);
* Anthropic 529 ``overloaded_error`` reaches the Anthropic SDK as
  OverloadedError (same family);
* an OpenAI-family error reaching an Anthropic client (and an Anthropic
  error reaching an OpenAI client, and either reaching a Gemini client) is
  converted to the client's error shape with the right status and type;
* an upstream 5xx the gateway retries: a single transient 503 is invisible
  to the client; a persistent one arrives as a server error;
* an unreachable upstream is a 502/504 in the client's shape;
* an upstream refusing a streamed request is an HTTP error status;
* an upstream stream cut short (no finish, no terminator) reaches every
  client protocol as an in-band error, not as a complete-looking answer.

A 429 puts the instance that answered it in a cooldown for its
``Retry-After`` (the gateway then answers 503 itself), so the tests that
script one run a gateway of their own (``own_gw``) rather than the shared one.
"""

import anthropic
import openai
import pytest
from google.genai import errors

from support import (
    API_KEY,
    anthropic_client,
    free_port,
    gemini_client,
    openai_client,
    provider_args,
)

pytestmark = pytest.mark.timeout(60)

OPENAI_CONTEXT_ERROR = {"error": {
    "message": "This model's maximum context length is 128000 tokens. However, your messages "
               "resulted in 130000 tokens.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


def say(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def own_gw(start_gateway, upstreams):
    """A gateway like the shared one, whose instances' cooldowns no other test sees."""
    return start_gateway("--api-key", API_KEY, *provider_args(upstreams.openai, upstreams.claude))


def test_openai_429_reaches_openai_sdk_as_rate_limit(own_gw, upstreams, nonce):
    upstreams.openai.fail_next(429, headers={"Retry-After": "17"}, times=None)
    with pytest.raises(openai.RateLimitError) as e:
        openai_client(own_gw, "openai-custom").chat.completions.create(
            model="gpt-4o-mini", messages=say(f"hi {nonce}"))
    assert e.value.status_code == 429
    assert e.value.response.headers.get("retry-after") == "17"
    body = e.value.response.json()
    assert body == upstreams.openai.default_error_body(429), "same-family error not forwarded as is"
    assert len(upstreams.openai.requests_to("/v1/chat/completions")) >= 1


def test_anthropic_529_reaches_anthropic_sdk_as_overloaded(gw, upstreams, nonce):
    upstreams.claude.fail_next(529, times=None)
    with pytest.raises(anthropic.OverloadedError) as e:
        anthropic_client(gw, "claude-custom").messages.create(
            model="claude-x", max_tokens=20, messages=say(f"hi {nonce}"))
    assert e.value.status_code == 529
    body = e.value.response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


def test_anthropic_529_streamed_reaches_anthropic_sdk(gw, upstreams, nonce):
    upstreams.claude.fail_next(529, times=None)
    with pytest.raises(anthropic.APIStatusError) as e:
        with anthropic_client(gw, "claude-custom").messages.stream(
                model="claude-x", max_tokens=20, messages=say(f"hi {nonce}")) as s:
            s.get_final_message()
    assert "overloaded" in str(e.value).lower()


def test_openai_error_reaches_anthropic_client_in_anthropic_shape(gw, upstreams, nonce):
    upstreams.openai.fail_next(400, body=OPENAI_CONTEXT_ERROR, times=None)
    with pytest.raises(anthropic.BadRequestError) as e:
        anthropic_client(gw, "openai-custom").messages.create(
            model="gpt-4o-mini", max_tokens=20, messages=say(f"hi {nonce}"))
    body = e.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "maximum context length" in body["error"]["message"]


def test_openai_429_reaches_anthropic_client_as_rate_limit(own_gw, upstreams, nonce):
    upstreams.openai.fail_next(429, headers={"Retry-After": "30"}, times=None)
    with pytest.raises(anthropic.RateLimitError) as e:
        anthropic_client(own_gw, "openai-custom").messages.create(
            model="gpt-4o-mini", max_tokens=20, messages=say(f"hi {nonce}"))
    body = e.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert e.value.response.headers.get("retry-after") == "30"


def test_anthropic_error_reaches_openai_client_in_openai_shape(gw, upstreams, nonce):
    upstreams.claude.fail_next(529, times=None)
    with pytest.raises(openai.APIStatusError) as e:
        openai_client(gw, "claude-custom").chat.completions.create(
            model="claude-x", messages=say(f"hi {nonce}"))
    assert e.value.status_code == 529
    body = e.value.response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"] == "Overloaded"
    assert body["error"]["type"]


def test_upstream_errors_reach_gemini_client_in_gemini_shape(own_gw, upstreams, nonce):
    upstreams.openai.fail_next(400, body=OPENAI_CONTEXT_ERROR, times=None)
    with pytest.raises(errors.ClientError) as e:
        gemini_client(own_gw, "openai-custom").models.generate_content(
            model="gemini-2.5-flash", contents=f"hi {nonce}")
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    assert "maximum context length" in e.value.message

    upstreams.claude.fail_next(429, headers={"Retry-After": "30"}, times=None)
    with pytest.raises(errors.ClientError) as e:
        gemini_client(own_gw, "claude-custom").models.generate_content(
            model="gemini-2.5-flash", contents=f"hi {nonce}")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"


def test_transient_503_is_retried(gw, upstreams, nonce):
    upstreams.openai.fail_next(503, times=1)
    r = openai_client(gw, "openai-custom").chat.completions.create(
        model="gpt-4o-mini", messages=say(f"hi {nonce}"))
    assert r.choices[0].message.content == f"openai says: hi {nonce}"
    assert len(upstreams.openai.requests_to("/v1/chat/completions")) == 2


def test_persistent_500_is_a_server_error(gw, upstreams, nonce):
    upstreams.claude.fail_next(500, times=None)
    with pytest.raises(anthropic.InternalServerError) as e:
        anthropic_client(gw, "claude-custom").messages.create(
            model="claude-x", max_tokens=20, messages=say(f"hi {nonce}"))
    assert e.value.status_code == 500
    attempts = len(upstreams.claude.requests_to("/v1/messages"))
    assert 1 <= attempts <= 3, "retries are bounded (default --request-max-retries 2)"


def test_unreachable_upstream_is_502_in_client_shape(start_gateway, upstreams, nonce):
    dead = free_port()  # nothing listens here
    g = start_gateway("--model-provider", "openai-custom,claude-custom",
                      "--openai-api-key", "k1", "--openai-base-url", f"http://127.0.0.1:{dead}/v1",
                      "--claude-api-key", "k2", "--claude-base-url", f"http://127.0.0.1:{dead}",
                      "--request-base-delay", "10ms")
    with pytest.raises(openai.APIStatusError) as e:
        openai_client(g).chat.completions.create(model="m", messages=say(f"hi {nonce}"))
    assert e.value.status_code in (502, 503, 504)
    assert e.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.APIStatusError) as e:
        anthropic_client(g, "claude-custom").messages.create(
            model="m", max_tokens=5, messages=say(f"hi {nonce}"))
    assert e.value.status_code in (502, 503, 504)
    assert e.value.response.json()["type"] == "error"


def test_upstream_error_status_in_stream_before_first_byte(gw, upstreams, nonce):
    """An upstream refusing a streamed request is an HTTP error, not a 200 stream."""
    upstreams.openai.fail_next(400, body=OPENAI_CONTEXT_ERROR, times=None)
    with pytest.raises(openai.BadRequestError):
        list(openai_client(gw, "openai-custom").chat.completions.create(
            model="gpt-4o-mini", messages=say(f"hi {nonce}"), stream=True))


def test_upstream_key_rejected_does_not_leak_key(start_gateway, upstreams, nonce):
    g = start_gateway(*provider_args(upstreams.openai, upstreams.claude, "openai-custom")[:2],
                      "--openai-api-key", "sk-wrong-upstream-key-5e5e",
                      "--openai-base-url", f"{upstreams.openai.root}/v1")
    with pytest.raises(openai.APIStatusError) as e:
        openai_client(g).chat.completions.create(model="m", messages=say(f"hi {nonce}"))
    assert e.value.status_code == 401
    assert "sk-wrong-upstream-key-5e5e" not in e.value.response.text


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_truncated_upstream_stream_is_an_error_for_the_client(gw, upstreams, nonce, provider,
                                                              client):
    """The upstream hangs up mid-answer (no finish, no terminator): the client
    must get an in-band error, not a short answer that looks complete."""
    upstreams.for_provider(provider).truncate_after = 4
    prompt = " ".join(f"word{i}" for i in range(30)) + f" {nonce}"
    if client == "openai":
        with pytest.raises(openai.APIError) as e:
            list(openai_client(gw, provider).chat.completions.create(
                model="m", messages=say(prompt), stream=True))
        assert not isinstance(e.value, openai.APIConnectionError)
    elif client == "anthropic":
        with pytest.raises(anthropic.APIError) as e:
            with anthropic_client(gw, provider).messages.stream(
                    model="m", max_tokens=200, messages=say(prompt)) as s:
                s.get_final_message()
        assert not isinstance(e.value, anthropic.APIConnectionError)
    else:
        with pytest.raises(errors.APIError):
            list(gemini_client(gw, provider).models.generate_content_stream(
                model="gemini-2.5-flash", contents=prompt))
