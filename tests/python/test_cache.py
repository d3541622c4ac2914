"""The response cache seen from the SDKs, on by default (README, "Response cache").

An identical non-streamed request is answered from the cache (``X-Cache:
HIT``, the upstream called once, the same answer); a different request, a
stream, and a request with ``Cache-Control: no-cache`` go to the upstream
(``MISS`` / ``BYPASS``). Checked through the OpenAI and Anthropic SDKs'
raw-response accessors against the upstream-backed providers.
"""

import pytest

from support import anthropic_client, openai_client

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_openai_sdk_identical_requests_hit_the_cache(gw, upstreams, nonce, provider):
    client = openai_client(gw, provider)
    msgs = [{"role": "user", "content": f"cache me {nonce}"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    assert first.headers.get("x-cache") == "MISS"
    assert second.headers.get("x-cache") == "HIT"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content
    up = upstreams.for_provider(provider)
    assert len([r for r in up.requests if r.method == "POST"]) == 1

    other = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"other {nonce}"}])
    assert other.headers.get("x-cache") == "MISS"
    assert len([r for r in up.requests if r.method == "POST"]) == 2


def test_no_cache_header_and_streams_bypass(gw, upstreams, nonce):
    client = openai_client(gw, "openai-custom")
    msgs = [{"role": "user", "content": f"bypass {nonce}"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    bypass = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=msgs, extra_headers={"Cache-Control": "no-cache"})
    assert bypass.headers.get("x-cache") == "BYPASS"
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=msgs, stream=True) as s:
        assert s.headers.get("x-cache") in ("BYPASS", None)
        list(s.iter_lines())
    assert len(upstreams.openai.requests_to("/v1/chat/completions")) == 3


def test_anthropic_sdk_hits_the_cache(gw, upstreams, nonce):
    client = anthropic_client(gw, "claude-custom")
    kwargs = dict(model="claude-test-model", max_tokens=50,
                  messages=[{"role": "user", "content": f"cache me {nonce}"}])
    a = client.messages.with_raw_response.create(**kwargs)
    b = client.messages.with_raw_response.create(**kwargs)
    assert (a.headers.get("x-cache"), b.headers.get("x-cache")) == ("MISS", "HIT")
    assert a.parse().content[0].text == b.parse().content[0].text
    assert len(upstreams.claude.requests_to("/v1/messages")) == 1
