"""The WebSocket API (README, "WebSocket API") with two real clients: the
``websockets`` library (its sync and asyncio clients) and
``websocket-client``. Every message type, interleaved streams, batch,
cancel, heartbeats, auth, limits and close codes, fragmentation, draining,
and every ``metadata.protocol`` against the mock, openai-custom and
claude-custom providers and the gemini-cli OAuth provider.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time

import pytest
import websocket  # websocket-client
import websockets
from websockets.sync.client import connect as ws_connect

from support import API_KEY, PROVIDERS, expected_answer_start

PROTOCOLS = ["openai", "anthropic", "gemini", "responses"]
MODELS = {"mock": "mock-small", "openai-custom": "gpt-upstream-mini",
          "claude-custom": "claude-upstream-haiku", "gemini-cli": "gemini-2.5-flash"}
TIMEOUT = 15


def url(gw, token: str | None = API_KEY, path: str = "/ws") -> str:
    query = f"?token={token}" if token is not None else ""
    return f"ws://127.0.0.1:{gw.port}{path}{query}"


def body(protocol: str, prompt: str) -> dict:
    if protocol == "anthropic":
        return {"max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}
    if protocol == "gemini":
        return {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if protocol == "responses":
        return {"input": prompt}
    return {"messages": [{"role": "user", "content": prompt}]}


def request(rid, prompt: str, provider: str = "mock", protocol: str = "openai",
            stream: bool = False) -> dict:
    return {"type": "request", "id": rid, "provider": provider, "model": MODELS[provider],
            "request": body(protocol, prompt),
            "metadata": {"stream": stream, "protocol": protocol}}


def whole_text(protocol: str, data: dict) -> str:
    if protocol == "anthropic":
        return "".join(b.get("text", "") for b in data["content"] if b["type"] == "text")
    if protocol == "gemini":
        return "".join(p.get("text", "") for p in data["candidates"][0]["content"]["parts"])
    if protocol == "responses":
        return "".join(c.get("text", "") for o in data["output"] if o["type"] == "message"
                       for c in o["content"] if c["type"] == "output_text")
    return data["choices"][0]["message"]["content"] or ""


def event_text(protocol: str, event: dict) -> str:
    if protocol == "anthropic":
        delta = event.get("delta") or {}
        return delta.get("text", "") if event.get("type") == "content_block_delta" else ""
    if protocol == "gemini":
        return "".join(p.get("text", "") for c in event.get("candidates", [])
                       for p in (c.get("content") or {}).get("parts", []))
    if protocol == "responses":
        return event.get("delta", "") if event.get("type") == "response.output_text.delta" else ""
    return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices", []))


class Conn:
    """One connection, with either client behind the same small interface."""

    def __init__(self, gw, client: str = "websockets", token: str | None = API_KEY, **kw):
        self.client = client
        if client == "websockets":
            self.ws = ws_connect(url(gw, token), open_timeout=TIMEOUT, max_size=None, **kw).__enter__()
        else:
            self.ws = websocket.create_connection(url(gw, token), timeout=TIMEOUT, **kw)

    def send(self, message) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def recv(self) -> dict:
        if self.client == "websockets":
            return json.loads(self.ws.recv(timeout=TIMEOUT))
        return json.loads(self.ws.recv())

    def answer(self, rid) -> tuple[list[dict], dict]:
        """Frames of ``rid`` until its last: (stream frames, last frame);
        frames of other ids are not expected here."""
        frames = []
        while True:
            m = self.recv()
            assert m.get("id") == rid, m
            if m["type"] in ("response", "stream_end", "error"):
                return frames, m
            assert m["type"] == "stream", m
            frames.append(m)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def metric(gw, series: str) -> float:
    text = gw.request("GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {series} in /metrics")


def wait_for(predicate, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # poll interval of a bounded wait
    raise AssertionError(f"timed out waiting for {what}")


# ---- message types, protocols, providers -------------------------------------


@pytest.mark.parametrize("client", ["websockets", "websocket-client"])
def test_every_message_type(gw, nonce, client):
    with Conn(gw, client) as c:
        c.send({"type": "heartbeat"})
        assert c.recv() == {"type": "heartbeat"}
        c.send(request("whole", f"whole {nonce}"))
        frames, last = c.answer("whole")
        assert frames == [] and last["type"] == "response"
        assert whole_text("openai", last["data"]).startswith(expected_answer_start("mock", f"whole {nonce}"))
        c.send(request("s", f"streamed {nonce}", stream=True))
        frames, last = c.answer("s")
        assert last == {"type": "stream_end", "id": "s"}
        assert len(frames) > 3
        text = "".join(event_text("openai", f["data"]) for f in frames)
        assert text.startswith(expected_answer_start("mock", f"streamed {nonce}"))
        c.send({"type": "request", "id": "bad", "provider": "no-such", "request": body("openai", "x")})
        _, last = c.answer("bad")
        assert last["type"] == "error" and last["error"]["code"] == "invalid_request", last
        assert isinstance(last["error"]["message"], str) and last["error"]["message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_protocol_against_every_provider(gw, upstreams, nonce, protocol, provider, stream):
    prompt = f"{protocol} via {provider} {nonce}"
    client = "websockets" if stream else "websocket-client"
    with Conn(gw, client) as c:
        c.send(request("p1", prompt, provider, protocol, stream))
        frames, last = c.answer("p1")
    if stream:
        assert last == {"type": "stream_end", "id": "p1"}, last
        text = "".join(event_text(protocol, f["data"]) for f in frames)
    else:
        assert last["type"] == "response", last
        text = whole_text(protocol, last["data"])
    assert text.startswith(expected_answer_start(provider, prompt)), text
    up = upstreams.for_provider(provider)
    if up is not None:
        path = "/v1/chat/completions" if provider == "openai-custom" else "/v1/messages"
        rec = up.last(path)
        assert rec.body["model"] == MODELS[provider]
        assert bool(rec.body.get("stream")) == stream
        assert API_KEY not in json.dumps(rec.headers), "client key forwarded upstream"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_oauth_provider_answers_every_protocol(gemini_cli, nonce, protocol):
    prompt = f"oauth {protocol} {nonce}"
    with Conn(gemini_cli.gw) as c:
        c.send(request("g", prompt, "gemini-cli", protocol, stream=True))
        frames, last = c.answer("g")
        assert last["type"] == "stream_end", last
        assert "".join(event_text(protocol, f["data"]) for f in frames) == f"gemini says: {prompt}"
        c.send(request("w", prompt, "gemini-cli", protocol))
        _, last = c.answer("w")
        assert whole_text(protocol, last["data"]) == f"gemini says: {prompt}"
    assert len(gemini_cli.up.generations()) >= 2


def test_streams_interleave_on_one_connection_as_they_arrive(gw, upstreams, nonce):
    upstreams.openai.stream_delay = 0.05
    upstreams.claude.stream_delay = 0.05
    words = " ".join(f"w{i}" for i in range(15))

    async def run():
        async with websockets.connect(url(gw)) as ws:
            await ws.send(json.dumps(request("a", f"{words} a {nonce}", "openai-custom", stream=True)))
            await ws.send(json.dumps(request("b", f"{words} b {nonce}", "claude-custom", "anthropic",
                                             stream=True)))
            got, ended = [], set()
            while ended != {"a", "b"}:
                m = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                got.append((time.monotonic(), m))
                if m["type"] == "stream_end":
                    ended.add(m["id"])
            return got

    got = asyncio.run(run())
    order = [m["id"] for _, m in got]
    assert order.index("b") < len(order) - 1 - order[::-1].index("a"), "not interleaved"
    for rid, protocol, provider in [("a", "openai", "openai-custom"), ("b", "anthropic", "claude-custom")]:
        frames = [m for _, m in got if m["id"] == rid]
        assert frames[-1]["type"] == "stream_end"
        text = "".join(event_text(protocol, m["data"]) for m in frames[:-1])
        assert text.startswith(expected_answer_start(provider, f"{words} {rid} {nonce}"))
    # Sent as they came: the frames of one stream are spread over its time.
    times = [t for t, m in got if m["id"] == "a"]
    assert times[-1] - times[0] > 0.4


def test_batch_answers_every_id_and_a_failing_member_gets_its_own_error(gw, nonce):
    members = [request("b1", f"one {nonce}"),
               request("b2", f"two {nonce}", stream=True),
               {"type": "request", "id": "b3", "provider": "not-a-provider", "request": body("openai", "x")},
               {"type": "request", "request": body("openai", "no id")},
               request("b4", f"four {nonce}", "claude-custom", "anthropic")]
    with Conn(gw, "websocket-client") as c:
        c.send({"type": "batch", "requests": members})
        last = {}
        while len(last) < 5:
            m = c.recv()
            if m["type"] != "stream":
                last[m.get("id")] = m
    assert last["b1"]["type"] == "response"
    assert last["b2"]["type"] == "stream_end"
    assert last["b3"]["type"] == "error" and last["b3"]["error"]["code"] == "invalid_request"
    assert last[None]["error"]["code"] == "missing_id"
    assert whole_text("anthropic", last["b4"]["data"]).startswith(expected_answer_start("claude-custom", f"four {nonce}"))


def test_cancel_stops_the_upstream_call(gw, upstreams, nonce):
    up = upstreams.openai
    up.stream_delay = 0.1
    prompt = " ".join(f"word{i}" for i in range(60)) + f" {nonce}"  # ~6 s of events
    with Conn(gw) as c:
        c.send(request("c", prompt, "openai-custom", stream=True))
        assert c.recv()["type"] == "stream"
        c.send({"type": "cancel", "id": "c"})
        started = time.monotonic()
        while True:
            m = c.recv()
            if m["type"] != "stream":
                break
        assert m == {"type": "error", "id": "c",
                     "error": {"code": "cancelled", "message": "cancelled by the client", "status": 499}}
        wait_for(lambda: up.aborted, "the upstream to see the hang-up", 3)
        assert time.monotonic() - started < 1.5
        c.send({"type": "cancel", "id": "c"})
        assert c.recv()["error"]["code"] == "unknown_id"
        c.send({"type": "heartbeat"})
        assert c.recv()["type"] == "heartbeat"


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom"])
def test_a_closed_socket_stops_its_upstream_calls_within_a_second(gw, upstreams, nonce, provider):
    up = upstreams.for_provider(provider)
    up.stream_delay = 0.1
    prompt = " ".join(f"word{i}" for i in range(60)) + f" {nonce}"
    c = Conn(gw, "websocket-client")
    c.send(request("x", prompt, provider, stream=True))
    assert c.recv()["type"] == "stream"
    c.ws.sock.close()  # gone without a close frame
    closed = time.monotonic()
    wait_for(lambda: up.aborted, "the upstream to see the hang-up", 3)
    assert time.monotonic() - closed < 1.0


def test_bad_messages_get_error_frames_and_the_connection_lives(gw):
    with Conn(gw) as c:
        cases = [("{not json", "invalid_json", None),
                 ('["a list"]', "invalid_message", None),
                 ({"type": "subscribe", "id": "u"}, "unknown_type", "u"),
                 ({"type": "request", "request": {}}, "missing_id", None),
                 ({"type": "request", "id": "m", "request": {}, "metadata": {"protocol": "soap"}},
                  "invalid_message", "m")]
        for message, code, rid in cases:
            c.send(message)
            m = c.recv()
            assert (m["type"], m["error"]["code"], m.get("id")) == ("error", code, rid), m
        c.ws.send(b"\x00\x01binary")
        assert c.recv()["error"]["code"] == "binary_not_supported"
        c.send({"type": "heartbeat"})
        assert c.recv()["type"] == "heartbeat"


def test_a_duplicate_in_flight_id_is_refused(gw, upstreams, nonce):
    upstreams.openai.stream_delay = 0.05
    prompt = " ".join(f"w{i}" for i in range(10)) + f" {nonce}"
    with Conn(gw, "websocket-client") as c:
        c.send(request("d", prompt, "openai-custom", stream=True))
        c.send(request("d", prompt, "openai-custom", stream=True))
        frames = []
        while True:
            m = c.recv()
            frames.append(m)
            if m["type"] == "stream_end":
                break
        errors = [m for m in frames if m["type"] == "error"]
        assert [e["error"]["code"] for e in errors] == ["duplicate_id"]
        assert errors[0]["id"] == "d"


# ---- heartbeats, auth, limits, close codes -----------------------------------


def test_heartbeats_both_ways_ping_and_the_idle_close(start_gateway):
    g = start_gateway("--api-key", API_KEY, "--websocket-heartbeat-interval", "1s",
                      "--websocket-idle-timeout", "3s")
    ws = websocket.create_connection(url(g), timeout=TIMEOUT)
    ws.send(json.dumps({"type": "heartbeat"}))
    assert json.loads(ws.recv()) == {"type": "heartbeat"}
    ws.ping(b"are you there")
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are you there")
    started = time.monotonic()
    assert json.loads(ws.recv()) == {"type": "heartbeat"}, "the server's own heartbeat"
    assert time.monotonic() - started < 2.5
    # Silent from now on (websocket-client sends nothing unasked).
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        assert json.loads(frame.data) == {"type": "heartbeat"}
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert 2.0 < time.monotonic() - started < 6.0
    ws.close()


def test_auth_every_way_and_401_before_upgrading(gw):
    headers = [{"Authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY},
               {"x-goog-api-key": API_KEY}]
    for h in headers:
        with ws_connect(url(gw, None), additional_headers=h, open_timeout=TIMEOUT) as ws:
            ws.send(json.dumps({"type": "heartbeat"}))
            assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "heartbeat"
    with ws_connect(f"ws://127.0.0.1:{gw.port}/ws?key={API_KEY}", open_timeout=TIMEOUT):
        pass
    for token in [None, "wrong-key"]:
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            ws_connect(url(gw, token), open_timeout=TIMEOUT)
        assert e.value.response.status_code == 401
        assert b"token" in e.value.response.body
        with pytest.raises(websocket.WebSocketBadStatusException) as e2:
            websocket.create_connection(url(gw, token), timeout=TIMEOUT)
        assert e2.value.status_code == 401


def test_limits_and_close_codes(start_gateway):
    g = start_gateway("--api-key", API_KEY, "--mock-chunk-delay", "100ms",
                      "--websocket-max-message-size", "65536", "--websocket-max-frame-size", "16384",
                      "--websocket-max-in-flight", "2", "--websocket-max-connections", "4")
    # Too big: a frame over 16 KiB, a message over 64 KiB in small frames.
    for message in [json.dumps({"type": "heartbeat", "pad": "x" * 20_000}),
                    iter(["x" * 10_000] * 8)]:  # eight fragments, 80 KB
        with ws_connect(url(g), open_timeout=TIMEOUT) as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as e:
                ws.send(message)
                ws.recv(timeout=TIMEOUT)
            assert e.value.rcvd.code == 1009
    # Invalid UTF-8 in a text frame: 1007.
    ws = websocket.create_connection(url(g), timeout=TIMEOUT)
    ws.send(b"\xc3\x28 not utf-8", opcode=websocket.ABNF.OPCODE_TEXT)
    assert close_code(ws) == 1007
    # Protocol errors: an unmasked frame, a reserved opcode: 1002.
    unmasked = websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, b'{"type":"heartbeat"}')
    reserved_opcode = b"\x83\x81" + b"\x00\x00\x00\x00" + b"x"  # opcode 3, masked
    for raw in [unmasked.format(), reserved_opcode]:
        ws = websocket.create_connection(url(g), timeout=TIMEOUT)
        ws.sock.sendall(raw)
        assert close_code(ws) == 1002
    assert g.request("GET", "/health").status == 200, "the server lives"
    # The per-connection in-flight cap: an error frame, and the connection lives.
    with Conn(g) as c:
        for i in range(3):
            c.send(request(f"f{i}", f"flight {i}", stream=True))
        first = c.recv()
        while first["type"] == "stream":
            first = c.recv()
        assert (first["id"], first["error"]["code"]) == ("f2", "too_many_requests"), first
        # The connection bound: 503 with Retry-After before upgrading.
        others = [Conn(g, "websocket-client") for _ in range(3)]
        with pytest.raises(websocket.WebSocketBadStatusException) as e:
            websocket.create_connection(url(g), timeout=TIMEOUT)
        assert e.value.status_code == 503
        assert e.value.resp_headers.get("retry-after") == "1"
        for o in others:
            o.close()
    assert metric(g, 'aiproxy_websocket_closes_total{code="1009"}') == 2
    assert metric(g, 'aiproxy_websocket_closes_total{code="1002"}') == 2
    assert metric(g, 'aiproxy_websocket_closes_total{code="1007"}') == 1


def close_code(ws) -> int:
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.sock.close()
            return int.from_bytes(frame.data[:2], "big")


def test_a_client_that_does_not_read_is_closed_1008(start_gateway):
    g = start_gateway("--api-key", API_KEY, "--websocket-max-queued-bytes", "65536")
    ws = websocket.create_connection(url(g), timeout=5,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    frame = websocket.ABNF.create_frame(json.dumps({"type": "heartbeat"}), websocket.ABNF.OPCODE_TEXT)
    burst = b"".join(frame.format() for _ in range(2000))  # 2000 answers owed per burst
    deadline = time.monotonic() + 20
    with pytest.raises(OSError):
        while time.monotonic() < deadline:  # bounded in time
            ws.sock.sendall(burst)
    wait_for(lambda: metric(g, 'aiproxy_websocket_closes_total{code="1008"}') == 1, "the 1008 count")
    assert g.request("GET", "/health").status == 200


def test_fragmented_messages_with_a_ping_between_fragments(gw, nonce):
    text = json.dumps(request("frag", f"fragments {nonce}"))
    parts = [text[i:i + 7] for i in range(0, len(text), 7)]
    ws = websocket.create_connection(url(gw), timeout=TIMEOUT)
    ABNF = websocket.ABNF
    for i, part in enumerate(parts):
        op = ABNF.OPCODE_TEXT if i == 0 else ABNF.OPCODE_CONT
        ws.send_frame(ABNF.create_frame(part, op, fin=int(i == len(parts) - 1)))
        if i == 1:
            ws.send_frame(ABNF.create_frame("between", ABNF.OPCODE_PING))
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"between")
    answer = json.loads(ws.recv())
    assert answer["type"] == "response" and answer["id"] == "frag"
    ws.close()
    # The websockets client fragments an iterable message the same way.
    with ws_connect(url(gw), open_timeout=TIMEOUT) as ws2:
        ws2.send(iter(parts))
        assert json.loads(ws2.recv(timeout=TIMEOUT))["id"] == "frag"


def test_turned_off_it_is_404(start_gateway):
    g = start_gateway("--api-key", API_KEY, "--websocket-enabled=false")
    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        ws_connect(url(g), open_timeout=TIMEOUT)
    assert e.value.response.status_code == 404


def test_sigterm_finishes_streams_refuses_new_requests_then_closes_1001(start_gateway):
    g = start_gateway("--api-key", API_KEY, "--mock-chunk-delay", "100ms")
    ws = websocket.create_connection(url(g), timeout=TIMEOUT)
    ws.send(json.dumps(request("long", "a b c d e f g h i j k l", stream=True)))
    assert json.loads(ws.recv())["type"] == "stream"
    g.send_signal(signal.SIGTERM)
    wait_for(lambda: g.request("GET", "/health").status == 503, "the drain to begin")
    ws.send(json.dumps(request("late", "too late")))
    seen = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        m = json.loads(frame.data)
        seen.append((m["type"], m["id"], m.get("error", {}).get("code")))
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert ("error", "late", "shutting_down") in seen
    assert seen[-1] == ("stream_end", "long", None)
    assert g.stop() == 0


# ---- observability --------------------------------------------------------------


def test_gauge_message_counts_access_lines_and_dashboard(gw, nonce):
    before = metric(gw, 'aiproxy_websocket_messages_total{type="request",direction="in"}')
    with Conn(gw) as c:
        assert metric(gw, "aiproxy_websocket_connections") >= 1
        summary = gw.request("GET", "/dashboard/summary.json").json()
        assert summary["websocket"]["connections"] >= 1
        rid = f"logged-{nonce}"
        c.send(request(rid, f"observed {nonce}", stream=True))
        c.answer(rid)
    assert metric(gw, 'aiproxy_websocket_messages_total{type="request",direction="in"}') == before + 1
    assert metric(gw, 'aiproxy_websocket_messages_total{type="stream_end",direction="out"}') >= 1
    line = wait_for(lambda: next((l for l in gw.stderr().splitlines() if f"id={rid}" in l), None),
                    "the access line")
    assert "transport=websocket" in line and "route=/ws" in line and "status=200" in line, line
    assert re.search(r"provider=mock model=mock-small", line), line
    assert API_KEY not in gw.stderr()
