"""Stream framing checked on the raw bytes (what SDKs hide), per provider.

* OpenAI: ``text/event-stream``, only ``data:`` events, JSON chunks with one
  id per stream, exactly one ``data: [DONE]`` and it is the last event.
* Anthropic: every event's ``event:`` line equals its JSON ``type``; the
  sequence is message_start, then per block (indexes 0, 1, … in order)
  content_block_start, deltas of the block's kind, content_block_stop,
  then one message_delta and message_stop (ping allowed anywhere) — for
  text answers and for tool_use answers (input_json_delta fragments that
  join to the tool input).
* Gemini: ``?alt=sse`` gives ``data:`` events; without it the answer is one
  JSON array of GenerateContentResponse objects; both carry the same text.
* A client that hangs up mid-stream makes the gateway hang up on the
  upstream too (the upstream's next writes fail), long before the stream
  would have ended.
"""

import json
import socket
import time

import pytest

from support import (
    API_KEY,
    PROVIDERS,
    WEATHER_SCHEMA,
    anthropic_client,
    expected_tool_args,
    gemini_client,
    openai_client,
)

pytestmark = pytest.mark.timeout(60)

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def sse_events(raw: bytes) -> list[dict]:
    """Parses SSE into [{"event": name or None, "data": str}]."""
    text = raw.decode("utf-8")
    assert "\r" not in text or text.count("\r\n") == text.count("\n"), "mixed line endings"
    text = text.replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        ev = {"event": None, "data": []}
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                ev["event"] = value
            elif name == "data":
                ev["data"].append(value)
            else:
                pytest.fail(f"unexpected SSE line {line!r}")
        if ev["data"] or ev["event"]:
            ev["data"] = "\n".join(ev["data"])
            events.append(ev)
    return events


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_stream_bytes(gw, upstreams, nonce, provider):
    r = gw.request("POST", f"/{provider}/v1/chat/completions", headers=AUTH, body={
        "model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": f"Tell me a story {nonce}"}]})
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.body)
    assert all(e["event"] is None for e in events), "OpenAI streams carry no event: lines"
    datas = [e["data"] for e in events]
    assert datas.count("[DONE]") == 1, datas[-3:]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks
    assert len({c["id"] for c in chunks}) == 1, "one id per stream"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finishes = [ch["finish_reason"] for c in chunks for ch in c.get("choices", [])
                if ch.get("finish_reason")]
    assert finishes == ["stop"]


def check_anthropic_sequence(events: list[dict]) -> list[dict]:
    """Asserts the Messages stream grammar; returns the data objects."""
    objs = []
    for e in events:
        obj = json.loads(e["data"])
        assert e["event"] == obj["type"], (e["event"], obj["type"])
        objs.append(obj)
    seq = [o for o in objs if o["type"] != "ping"]
    assert seq[0]["type"] == "message_start"
    assert seq[0]["message"]["role"] == "assistant" and seq[0]["message"]["content"] == []
    assert seq[-1]["type"] == "message_stop"
    assert seq[-2]["type"] == "message_delta"
    assert seq[-2]["delta"]["stop_reason"]
    body = seq[1:-2]
    index = 0
    i = 0
    while i < len(body):
        start = body[i]
        assert start["type"] == "content_block_start", start
        assert start["index"] == index
        kind = start["content_block"]["type"]
        want = {"text": "text_delta", "tool_use": "input_json_delta",
                "thinking": "thinking_delta"}[kind]
        i += 1
        while body[i]["type"] == "content_block_delta":
            assert body[i]["index"] == index
            assert body[i]["delta"]["type"] in (want, "signature_delta")
            i += 1
        assert body[i] == {"type": "content_block_stop", "index": index}, body[i]
        i += 1
        index += 1
    assert index >= 1, "no content block"
    return objs


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_text_stream_bytes(gw, upstreams, nonce, provider):
    r = gw.request("POST", f"/{provider}/v1/messages",
                   headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}, body={
                       "model": "claude-x", "max_tokens": 200, "stream": True,
                       "messages": [{"role": "user", "content": f"Tell me a story {nonce}"}]})
    assert r.status == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    objs = check_anthropic_sequence(sse_events(r.body))
    text = "".join(o["delta"]["text"] for o in objs if o["type"] == "content_block_delta")
    assert nonce in text
    final = [o for o in objs if o["type"] == "message_delta"][0]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_tool_stream_bytes(gw, upstreams, nonce, provider):
    r = gw.request("POST", f"/{provider}/v1/messages",
                   headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}, body={
                       "model": "claude-x", "max_tokens": 200, "stream": True,
                       "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
                       "messages": [{"role": "user", "content": f"Weather in Paris {nonce}"}]})
    assert r.status == 200, r.text
    objs = check_anthropic_sequence(sse_events(r.body))
    starts = [o for o in objs if o["type"] == "content_block_start"]
    tool_blocks = [s for s in starts if s["content_block"]["type"] == "tool_use"]
    assert len(tool_blocks) == 1
    idx = tool_blocks[0]["index"]
    assert tool_blocks[0]["content_block"]["name"] == "get_weather"
    assert tool_blocks[0]["content_block"]["id"]
    partial = "".join(o["delta"]["partial_json"] for o in objs
                      if o["type"] == "content_block_delta" and o["index"] == idx)
    assert json.loads(partial) == expected_tool_args(provider)
    assert [o for o in objs if o["type"] == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_gemini_stream_sse_and_json_array(gw, upstreams, nonce, provider):
    path = f"/{provider}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": f"Tell me a story {nonce}"}]}]}
    sse = gw.request("POST", path + "?alt=sse", headers={"x-goog-api-key": API_KEY}, body=body)
    assert sse.status == 200, sse.text
    assert sse.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(e["data"]) for e in sse_events(sse.body)]
    assert len(chunks) >= 2
    sse_text = "".join(p.get("text", "") for c in chunks for cand in c.get("candidates", [])
                       for p in cand.get("content", {}).get("parts", []))
    assert nonce in sse_text
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"

    arr = gw.request("POST", path, headers={"x-goog-api-key": API_KEY}, body=body)
    assert arr.status == 200, arr.text
    assert arr.headers["content-type"].startswith("application/json")
    items = json.loads(arr.body)
    assert isinstance(items, list) and len(items) >= 2
    arr_text = "".join(p.get("text", "") for c in items for cand in c.get("candidates", [])
                       for p in cand.get("content", {}).get("parts", []))
    assert arr_text == sse_text


def test_gemini_key_in_query_for_rest_users(gw, nonce):
    r = gw.request("POST", f"/v1beta/models/gemini-2.5-flash:generateContent?key={API_KEY}",
                   body={"contents": [{"parts": [{"text": f"hi {nonce}"}]}]})
    assert r.status == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"]


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_client_disconnect_stops_the_upstream_stream(gw, upstreams, nonce, provider):
    up = upstreams.for_provider(provider)
    up.stream_delay = 0.1
    prompt = " ".join(f"word{i}" for i in range(60)) + f" {nonce}"  # ~6 s of events
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    try:
        sock.sendall(b"POST /" + provider.encode() + b"/v1/chat/completions HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        started = time.monotonic()
    finally:
        sock.close()
    deadline = started + 4
    while time.monotonic() < deadline and not up.aborted:
        time.sleep(0.05)  # bounded wait for the gateway to notice the hang-up
    assert up.aborted, "the upstream stream kept running after the client left"
    assert time.monotonic() - started < 4


def test_keepalives_during_upstream_silence_are_invisible_to_sdks(start_gateway):
    """``--stream-keepalive`` shorter than the gap between upstream chunks:
    the raw bytes carry Anthropic ``ping`` events and SSE comments between
    the chunks, and the official SDKs stream the same text as they get
    unstreamed."""
    g = start_gateway("--model-provider", "mock", "--mock-chunk-delay", "100ms",
                      "--stream-keepalive", "30ms")
    prompt = "keep me alive"
    say = [{"role": "user", "content": prompt}]
    auth = {"Authorization": "Bearer none"}

    raw = g.request("POST", "/v1/messages", headers=auth, body={
        "model": "m", "max_tokens": 50, "stream": True, "messages": say}, timeout=30).body
    events = sse_events(raw)
    assert events[0]["event"] == "message_start" and events[-1]["event"] == "message_stop"
    pings = [e for e in events if e["event"] == "ping"]
    assert len(pings) >= 2, [e["event"] for e in events]
    assert all(json.loads(e["data"]) == {"type": "ping"} for e in pings)
    assert b"\n: keep-alive\n\n" in g.request("POST", "/v1/chat/completions", headers=auth, body={
        "model": "m", "stream": True, "messages": say}, timeout=30).body

    claude = anthropic_client(g, key="none")
    with claude.messages.stream(model="m", max_tokens=50, messages=say) as s:
        streamed = s.get_final_text()
    unary = claude.messages.create(model="m", max_tokens=50, messages=say).content[0].text
    assert streamed == unary

    oai = openai_client(g, key="none")
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in oai.chat.completions.create(model="m", stream=True, messages=say)
                       if c.choices)
    assert streamed == oai.chat.completions.create(model="m", messages=say).choices[0].message.content

    gem = gemini_client(g, key="none")
    streamed = "".join(r.text or "" for r in gem.models.generate_content_stream(
        model="m", contents=prompt))
    assert streamed == gem.models.generate_content(model="m", contents=prompt).text
