"""Concurrent streams and content that is easy to mangle.

* Many streams at once, in all three client protocols, over all three
  providers: each client gets exactly its own answer (per-stream converter
  state, no cross-talk), in a loop bounded in count and time.
* Non-ASCII text (accents, CJK, emoji) survives every conversion, unary and
  streamed (chunk boundaries inside multi-byte characters).
* Images: an OpenAI data-URI image reaches claude-custom as a base64 image
  block, an Anthropic base64 image reaches openai-custom as a data URI, and
  a Gemini inlineData image (URL-safe base64 from google-genai) reaches
  both upstreams as standard base64.
* Stop sequences: OpenAI ``stop`` ↔ Anthropic ``stop_sequences``.
"""

import base64
import json
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest
from google.genai import types

from support import (
    PROVIDERS,
    anthropic_client,
    expected_answer_start,
    gemini_client,
    openai_client,
)

pytestmark = pytest.mark.timeout(90)

UNICODE = "héllo wörld 世界 🚀 ﬁn"

PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101001865d4e60000000049454e44ae426082")).decode()


def stream_text(protocol: str, gw, provider: str, prompt: str) -> str:
    if protocol == "openai":
        chunks = openai_client(gw, provider).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if protocol == "anthropic":
        with anthropic_client(gw, provider).messages.stream(
                model="claude-test-model", max_tokens=200,
                messages=[{"role": "user", "content": prompt}]) as s:
            return "".join(s.text_stream)
    chunks = gemini_client(gw, provider).models.generate_content_stream(
        model="gemini-2.5-flash", contents=prompt)
    return "".join(c.text or "" for c in chunks)


def test_concurrent_streams_do_not_mix(gw, upstreams, nonce):
    jobs = [(proto, provider, f"request {i} {proto} {provider} {nonce}")
            for i in range(2)
            for proto in ("openai", "anthropic", "gemini")
            for provider in PROVIDERS]
    assert len(jobs) == 18
    with ThreadPoolExecutor(max_workers=9) as pool:
        futures = {pool.submit(stream_text, proto, gw, provider, prompt): (provider, prompt)
                   for proto, provider, prompt in jobs}
        for fut in as_completed(futures, timeout=60):
            provider, prompt = futures[fut]
            text = fut.result(timeout=1)
            assert text.startswith(expected_answer_start(provider, prompt)), (prompt, text)
            others = [p for _, _, p in jobs if p != prompt]
            assert not any(o in text for o in others)


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_unicode_survives_streaming(gw, upstreams, nonce, protocol, provider):
    prompt = f"{UNICODE} {nonce}"
    text = stream_text(protocol, gw, provider, prompt)
    assert text.startswith(expected_answer_start(provider, prompt))
    assert UNICODE in text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unicode_survives_unary(gw, upstreams, nonce, provider):
    prompt = f"{UNICODE} {nonce}"
    m = anthropic_client(gw, provider).messages.create(
        model="claude-test-model", max_tokens=200, system=f"système {UNICODE}",
        messages=[{"role": "user", "content": prompt}])
    assert UNICODE in m.content[0].text
    if provider == "openai-custom":
        sent = upstreams.openai.last("/v1/chat/completions").body["messages"]
        assert sent[0]["content"] == f"système {UNICODE}" or \
            f"système {UNICODE}" in json.dumps(sent[0]["content"], ensure_ascii=False)


def test_openai_image_reaches_claude_as_base64_block(gw, upstreams, nonce):
    openai_client(gw, "claude-custom").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": [
            {"type": "text", "text": f"What is in this picture {nonce}"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}}]}])
    content = upstreams.claude.last("/v1/messages").body["messages"][0]["content"]
    images = [b for b in content if b["type"] == "image"]
    assert images == [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG_1PX}}]


def test_anthropic_image_reaches_openai_as_data_uri(gw, upstreams, nonce):
    anthropic_client(gw, "openai-custom").messages.create(
        model="claude-test-model", max_tokens=50, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_1PX}},
            {"type": "text", "text": f"What is in this picture {nonce}"}]}])
    content = upstreams.openai.last("/v1/chat/completions").body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    assert urls == [f"data:image/png;base64,{PNG_1PX}"]


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_gemini_inline_image_reaches_upstream_as_standard_base64(gw, upstreams, nonce, provider):
    """google-genai sends inlineData as URL-safe base64 ('-', '_'); Anthropic
    image blocks and OpenAI data URIs take standard base64 ('+', '/')."""
    gemini_client(gw, provider).models.generate_content(
        model="gemini-2.5-flash", contents=[types.Content(role="user", parts=[
            types.Part.from_bytes(data=base64.b64decode(PNG_1PX), mime_type="image/png"),
            types.Part(text=f"Describe {nonce}")])])
    assert "+" in PNG_1PX, "the fixture must tell the two alphabets apart"
    if provider == "claude-custom":
        content = upstreams.claude.last("/v1/messages").body["messages"][0]["content"]
        images = [b for b in content if b["type"] == "image"]
        assert len(images) == 1
        assert images[0]["source"]["media_type"] == "image/png"
        assert images[0]["source"]["data"] == PNG_1PX, "not standard base64"
    else:
        content = upstreams.openai.last("/v1/chat/completions").body["messages"][0]["content"]
        urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        assert urls == [f"data:image/png;base64,{PNG_1PX}"], "not standard base64"


def test_stop_sequences_are_mapped(gw, upstreams, nonce):
    openai_client(gw, "claude-custom").chat.completions.create(
        model="gpt-4o-mini", stop=["END", "STOP"],
        messages=[{"role": "user", "content": f"hi {nonce}"}])
    assert upstreams.claude.last("/v1/messages").body.get("stop_sequences") == ["END", "STOP"]
    anthropic_client(gw, "openai-custom").messages.create(
        model="claude-test-model", max_tokens=20, stop_sequences=["END"],
        messages=[{"role": "user", "content": f"hi {nonce}"}])
    stop = upstreams.openai.last("/v1/chat/completions").body.get("stop")
    assert stop in (["END"], "END")
