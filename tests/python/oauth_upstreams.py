"""Mock upstreams of the three OAuth providers, for the end-to-end tests
that drive the real binary with the official SDKs (test_oauth_providers_sdk.py).

Three small HTTP servers on 127.0.0.1 (port 0, stdlib ``ThreadingHTTPServer``
through ``mock_upstreams.MockUpstream``, daemon threads), each with the
provider's token endpoint on the same server:

* ``CodeAssistUpstream`` (gemini-cli): Google Code Assist,
  ``POST /v1internal:generateContent`` and
  ``POST /v1internal:streamGenerateContent?alt=sse``. The request must be
  wrapped as ``{"model", "project", "request"}``; every answer (whole, or
  each SSE chunk) is wrapped as ``{"response": {...}, "traceId": ...}``.
  Token endpoint ``POST /token`` (Google's form-encoded ``refresh_token``
  grant with the Gemini CLI's client id).
* ``KiroUpstream`` (kiro-api): ``POST /generateAssistantResponse`` with
  Kiro's ``conversationState`` body, answered as
  ``application/vnd.amazon.eventstream``: binary frames with real CRC32s
  (``assistantResponseEvent``, ``toolUseEvent`` input fragments then
  ``stop``, ``meteringEvent``, ``contextUsageEvent``), sent as HTTP chunks
  with one tool frame split across two writes. Refresh endpoint
  ``POST /refreshToken`` (Kiro social login, JSON ``refreshToken``).
* ``QwenUpstream`` (qwen-api): ``POST /v1/chat/completions``, OpenAI
  compatible (unary, or SSE ending ``data: [DONE]``). Token endpoint
  ``POST /api/v1/oauth2/token`` (form-encoded, Qwen Code's client id).

Answers are deterministic and derived from the request, so a test can tell
that aiproxy converted it: when the request offers a tool (and is not
already answering one), a short text then a call of the first tool with
arguments built from the tool's JSON schema (strings ``"Paris"``, numbers 3,
booleans true); Qwen also calls the dummy ``ext`` tool aiproxy adds, which
aiproxy must hide from clients. When the last turn carries a tool result,
``"<label> tool result: <result>"``; otherwise ``"<label> says: <last user
text>"``. Like the real services they reject what they would reject: an
unknown bearer token (401, or 403 for Kiro), a malformed body (Code Assist
without its wrapping, Kiro nulls or history out of order, tool results
that answer no call) — so a bad conversion fails loudly.

Only the tokens the fixture configured (``valid_token``) or the token
endpoint issued (``<prefix>-fresh<n>``) are accepted. Every request is
recorded; ``refreshes`` counts token-endpoint calls. ``KiroUpstream.hold()``
arms a gate: the next streamed answer stops in the middle of a tool frame
until the test releases it, proving that text reached the client while a
frame was still incomplete.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import zlib
from typing import Any
from urllib.parse import parse_qs

from mock_upstreams import (
    MockUpstream,
    Recorded,
    _split3,
    example_args,
    last_path,
    openai_text,
    prompt_text,
    read_tool,
)

GEMINI_CLI_CLIENT_ID_PREFIX = "681255809395-"
QWEN_CLIENT_ID = "f0304373b74a44d2b584a3fb70ca9e56"
# How long a held Kiro stream waits for the test before going on anyway.
HOLD_TIMEOUT = 10.0


def schema_args(schema: dict | None) -> dict:
    """Arguments for a call of a tool: every string is ``"Paris"``."""
    return example_args(schema, lambda _prop: "Paris")


def find_none(v: Any, path: str = "$") -> str | None:
    """The path of the first JSON null in ``v`` (Kiro rejects nulls)."""
    if v is None:
        return path
    if isinstance(v, dict):
        items = v.items()
    elif isinstance(v, list):
        items = enumerate(v)
    else:
        return None
    for k, sub in items:
        found = find_none(sub, f"{path}.{k}")
        if found:
            return found
    return None


class OAuthUpstream(MockUpstream):
    """Shared parts: accepted tokens, the token endpoint's counter."""

    label = "oauth"
    token_prefix = "tok"
    token_path = "/token"

    def __init__(self, valid_token: str):
        self.valid_token = valid_token
        self.refreshes = 0
        self.issued: list[str] = []
        super().__init__(valid_token)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.refreshes = 0
            self.issued.clear()

    def issue_token(self) -> str:
        with self._lock:
            self.refreshes += 1
            token = f"{self.token_prefix}-fresh{self.refreshes}"
            self.issued.append(token)
            return token

    def authorized(self, rec: Recorded) -> bool:
        auth = rec.headers.get("authorization", "")
        with self._lock:
            accepted = {self.valid_token, *self.issued}
        return auth.removeprefix("Bearer ") in accepted and auth.startswith("Bearer ")

    def generations(self) -> list[Recorded]:
        """Every request except the token endpoint's."""
        return [r for r in self.requests if r.path.split("?")[0] != self.token_path]

    @staticmethod
    def form(rec: Recorded) -> dict[str, str]:
        """A form-encoded body as a dict (last value wins)."""
        return {k: v[-1] for k, v in parse_qs(rec.raw.decode(), keep_blank_values=True).items()}

    def handle(self, h, rec):
        if rec.method == "POST" and rec.path == self.token_path:
            return self.token_endpoint(h, rec)
        return self.api(h, rec)

    def token_endpoint(self, h, rec):
        raise NotImplementedError

    def api(self, h, rec):
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Google Code Assist (gemini-cli)
# ---------------------------------------------------------------------------


class CodeAssistUpstream(OAuthUpstream):
    """Google Code Assist, the upstream of gemini-cli.

    Expects ``project`` to be ``self.project`` (pass it with
    ``--project-id``; discovery with loadCodeAssist is not mocked here) or
    one of ``projects``, the other accounts of a pool; ``project_errors``
    scripts an error for every generation of one project (an account out
    of quota).
    """

    label = "gemini"
    token_prefix = "ya29"
    token_path = "/token"
    PREAMBLE = "Let me look up the weather."

    def __init__(self, valid_token: str, project: str):
        self.project = project
        self.projects: set[str] = set()
        self.project_errors: dict[str, tuple[int, dict]] = {}
        super().__init__(valid_token)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.projects.clear()
            self.project_errors.clear()

    def _error(self, h, status: int, message: str, kind: str):
        return self.send_json(h, status, {"error": {"code": status, "message": message,
                                                    "status": kind}})

    def token_endpoint(self, h, rec):
        form = self.form(rec)
        if (rec.headers.get("content-type") != "application/x-www-form-urlencoded"
                or form.get("grant_type") != "refresh_token"
                or not form.get("client_id", "").startswith(GEMINI_CLI_CLIENT_ID_PREFIX)
                or not form.get("client_secret")):
            return self.send_json(h, 400, {"error": "invalid_request",
                                           "error_description": "Bad refresh request"})
        if form.get("refresh_token") != "1//gemini-refresh":
            return self.send_json(h, 400, {"error": "invalid_grant",
                                           "error_description": "Bad Request"})
        return self.send_json(h, 200, {"access_token": self.issue_token(), "expires_in": 3599,
                                       "scope": "https://www.googleapis.com/auth/cloud-platform",
                                       "token_type": "Bearer"})

    def api(self, h, rec):
        path = rec.path
        if not self.authorized(rec):
            return self._error(h, 401, "Request had invalid authentication credentials.",
                               "UNAUTHENTICATED")
        if rec.method != "POST" or path not in ("/v1internal:generateContent",
                                                "/v1internal:streamGenerateContent?alt=sse"):
            return self._error(h, 404, f"Method not found: {path}", "NOT_FOUND")
        body = rec.body
        if not isinstance(body, dict) or set(body) != {"model", "project", "request"}:
            return self._error(h, 400, "Invalid JSON payload: expected {model, project, request}",
                               "INVALID_ARGUMENT")
        if body["project"] != self.project and body["project"] not in self.projects:
            return self._error(h, 403, f"Permission denied on project {body['project']}",
                               "PERMISSION_DENIED")
        if body["project"] in self.project_errors:
            status, error = self.project_errors[body["project"]]
            return self.send_json(h, status, error)
        req = body["request"]
        contents = req.get("contents") if isinstance(req, dict) else None
        if not isinstance(contents, list) or not contents:
            return self._error(h, 400, "contents is not specified", "INVALID_ARGUMENT")
        called: set[str] = set()
        for c in contents:
            if c.get("role") not in ("user", "model"):
                return self._error(h, 400, f"Please use a valid role: {c.get('role')}",
                                   "INVALID_ARGUMENT")
            parts = c.get("parts") or []
            responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
            if any(r.get("name") not in called for r in responses):
                return self._error(
                    h, 400, "Please ensure that function response turn comes immediately "
                            "after a function call turn.", "INVALID_ARGUMENT")
            called = {p["functionCall"]["name"] for p in parts if "functionCall" in p}
        last = contents[-1]
        responses = [p["functionResponse"] for p in last.get("parts") or []
                     if "functionResponse" in p]
        decls = [d for t in req.get("tools") or [] for d in t.get("functionDeclarations") or []]
        parts: list[dict] = []
        reader = read_tool([(d["name"], d.get("parametersJsonSchema") or d.get("parameters"))
                            for d in decls])
        answered = any("functionResponse" in p for c in contents for p in c.get("parts") or [])
        user = next((c for c in reversed(contents) if c.get("role") == "user"), {})
        prompt = prompt_text(user.get("parts"))
        to_read = last_path(prompt) if reader and not answered else None
        if to_read:
            # An agent session (see mock_upstreams.read_tool): read the
            # file the prompt names, once.
            parts.append({"text": self.PREAMBLE})
            parts.append({"functionCall": {"name": reader[0], "args": {reader[1]: to_read}}})
        elif responses:
            parts.append({"text": f"{self.label} tool result: "
                                  + " ".join(_response_text(r.get("response")) for r in responses)})
        elif decls and not reader:
            decl = decls[0]
            schema = decl.get("parametersJsonSchema") or decl.get("parameters")
            parts.append({"text": self.PREAMBLE})
            args = self.tool_args.get(decl["name"]) or schema_args(schema)
            parts.append({"functionCall": {"name": decl["name"], "args": args}})
        else:
            user = " ".join(p.get("text", "") for p in last.get("parts") or [])
            parts.append({"text": f"{self.label} says: {user}"})
        usage = {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}
        n = self._next_id()
        if "stream" not in path:
            return self.send_json(h, 200, {"response": {
                "candidates": [{"content": {"role": "model", "parts": parts},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": body["model"],
                "responseId": f"resp-{n}"}, "traceId": f"trace-{n}"})
        self.start_sse(h)
        # Text word by word, then the call (Code Assist sends calls whole).
        pieces: list[dict] = []
        for part in parts:
            if "text" in part:
                words = part["text"].split(" ")
                pieces += [{"text": w if i == 0 else " " + w} for i, w in enumerate(words)]
            else:
                pieces.append(part)
        for i, piece in enumerate(pieces):
            cand: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": 0}
            chunk: dict[str, Any] = {"candidates": [cand], "modelVersion": body["model"],
                                     "responseId": f"resp-{n}"}
            if i == len(pieces) - 1:
                cand["finishReason"] = "STOP"
                chunk["usageMetadata"] = usage
            wrapped = {"response": chunk, "traceId": f"trace-{n}"}
            self.write(h, f"data: {json.dumps(wrapped)}\n\n")


def _response_text(response: Any) -> str:
    """A functionResponse.response as text: its ``result``, else JSON."""
    if isinstance(response, dict) and isinstance(response.get("result"), str):
        return response["result"]
    return json.dumps(response)


# ---------------------------------------------------------------------------
# Kiro (kiro-api)
# ---------------------------------------------------------------------------


def eventstream_frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One AWS event-stream message with string headers: prelude (total
    length, headers length, CRC32 of those 8 bytes), headers, payload, CRC32
    of everything before it."""
    hdrs = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        hdrs += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v
    prelude = struct.pack(">II", 16 + len(hdrs) + len(payload), len(hdrs))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + hdrs + payload
    return message + struct.pack(">I", zlib.crc32(message))


def kiro_event(kind: str, payload: dict) -> bytes:
    return eventstream_frame([(":message-type", "event"), (":event-type", kind),
                              (":content-type", "application/json")],
                             json.dumps(payload).encode())


class KiroUpstream(OAuthUpstream):
    """Kiro's ``generateAssistantResponse`` (AWS CodeWhisperer streaming)."""

    label = "kiro"
    token_prefix = "aoa"
    token_path = "/refreshToken"
    PREAMBLE = "Let me check the weather. "
    PROFILE_ARN = "arn:aws:codewhisperer:us-east-1:123456789012:profile/MOCK"

    def __init__(self, valid_token: str):
        self._gate: threading.Event | None = None
        self.gate_timed_out = False
        super().__init__(valid_token)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._gate = None
            self.gate_timed_out = False

    def hold(self) -> threading.Event:
        """The next streamed answer pauses after its text and half a tool
        frame until the returned event is set (or HOLD_TIMEOUT passes)."""
        gate = threading.Event()
        with self._lock:
            self._gate = gate
        return gate

    def _refuse(self, h, status: int, message: str, reason: str | None = None):
        body: dict[str, Any] = {"message": message}
        if reason:
            body["reason"] = reason
        return self.send_json(h, status, body)

    def token_endpoint(self, h, rec):
        body = rec.body if isinstance(rec.body, dict) else {}
        if body.get("refreshToken") != "aor-kiro-refresh":
            return self._refuse(h, 401, "Invalid refresh token")
        return self.send_json(h, 200, {"accessToken": self.issue_token(),
                                       "refreshToken": "aor-kiro-refresh-2", "expiresIn": 3600,
                                       "profileArn": self.PROFILE_ARN})

    def _validate(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("conversationState"), dict):
            return "conversationState is required"
        null = find_none(body)
        if null:
            return f"null at {null}"
        state = body["conversationState"]
        current = (state.get("currentMessage") or {}).get("userInputMessage")
        if not isinstance(current, dict) or not current.get("content") or not current.get(
                "modelId"):
            return "currentMessage.userInputMessage needs content and modelId"
        if "history" in state and not state["history"]:
            return "empty history"
        history = state.get("history") or []
        for i, item in enumerate(history):
            want = "userInputMessage" if i % 2 == 0 else "assistantResponseMessage"
            if list(item) != [want]:
                return f"history[{i}] must be {want}"
        if history and "assistantResponseMessage" not in history[-1]:
            return "history must end with an assistant message"
        results = (current.get("userInputMessageContext") or {}).get("toolResults") or []
        uses = {u["toolUseId"] for u in (history[-1]["assistantResponseMessage"].get(
            "toolUses") or [])} if history else set()
        if any(r.get("toolUseId") not in uses for r in results):
            return "toolResults must answer toolUses of the previous assistant message"
        return None

    def api(self, h, rec):
        if not self.authorized(rec):
            return self._refuse(h, 403, "The bearer token included in the request is invalid.")
        if rec.method != "POST" or rec.path != "/generateAssistantResponse":
            return self._refuse(h, 404, f"Unknown operation {rec.path}")
        problem = self._validate(rec.body)
        if problem:
            # What Kiro says, whatever the rule broken; the detail is for us.
            return self._refuse(h, 400, f"Improperly formed request. ({problem})")
        current = rec.body["conversationState"]["currentMessage"]["userInputMessage"]
        context = current.get("userInputMessageContext") or {}
        results = context.get("toolResults") or []
        tools = [t["toolSpecification"] for t in context.get("tools") or []]
        n = self._next_id()
        tool_frames: list[bytes] = []
        if results:
            text = f"{self.label} tool result: " + " ".join(
                c.get("text", "") for r in results for c in r.get("content") or [])
        elif tools:
            text = self.PREAMBLE
            spec = tools[0]
            args = json.dumps(schema_args((spec.get("inputSchema") or {}).get("json")))
            use = {"toolUseId": f"tooluse_mock{n:04d}", "name": spec["name"]}
            tool_frames = [kiro_event("toolUseEvent", {**use, "input": frag})
                           for frag in _split3(args)]
            tool_frames.append(kiro_event("toolUseEvent", {**use, "stop": True}))
        else:
            text = f"{self.label} says: {current['content']}"
        words = text.split(" ")
        text_frames = [kiro_event("assistantResponseEvent",
                                  {"content": w if i == 0 else " " + w})
                       for i, w in enumerate(words)]
        tail = [kiro_event("meteringEvent", {"unit": "credit", "unitPlural": "credits",
                                             "usage": 0.02}),
                kiro_event("contextUsageEvent", {"contextUsagePercentage": 0.5})]
        with self._lock:
            gate, self._gate = self._gate, None
        self._send_frames(h, text_frames, tool_frames, tail, gate)

    def _send_frames(self, h, text_frames, tool_frames, tail, gate):
        """Writes the frames as HTTP chunks; the first tool frame is split
        across two writes, with the hold (if armed) in between."""
        h.send_response(200)
        h.send_header("Content-Type", "application/vnd.amazon.eventstream")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("x-amzn-RequestId", "00000000-0000-4000-8000-000000000000")
        h.end_headers()
        h.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def chunk(data: bytes) -> None:
            # One write per HTTP chunk, so each arrives as one segment.
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        if tool_frames:
            # Text plus the first half of the first tool frame, then the
            # rest of that frame in a separate write.
            first = tool_frames[0]
            half = len(first) // 2
            chunk(b"".join(text_frames) + first[:half])
            if gate is not None and not gate.wait(HOLD_TIMEOUT):
                with self._lock:
                    self.gate_timed_out = True
            chunk(first[half:])
            for frame in tool_frames[1:]:
                chunk(frame)
        else:
            for frame in text_frames:
                chunk(frame)
        chunk(b"".join(tail))
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


# ---------------------------------------------------------------------------
# Qwen (qwen-api)
# ---------------------------------------------------------------------------


class QwenUpstream(OAuthUpstream):
    """Qwen's OpenAI-compatible chat API (portal.qwen.ai/v1)."""

    label = "qwen"
    token_prefix = "qa"
    token_path = "/api/v1/oauth2/token"
    PREAMBLE = "Calling get_weather now."
    EXT = "ext"

    def _invalid(self, h, status: int, message: str, code: str | None = None):
        return self.send_json(h, status, {"error": {"message": message,
                                                    "type": "invalid_request_error",
                                                    "param": None, "code": code}})

    def token_endpoint(self, h, rec):
        form = self.form(rec)
        if (rec.headers.get("content-type") != "application/x-www-form-urlencoded"
                or form.get("grant_type") != "refresh_token"
                or form.get("client_id") != QWEN_CLIENT_ID):
            return self.send_json(h, 400, {"error": "invalid_request"})
        if form.get("refresh_token") != "qr-qwen-refresh":
            return self.send_json(h, 400, {"error": "invalid_grant",
                                           "error_description": "Refresh token expired"})
        return self.send_json(h, 200, {"access_token": self.issue_token(), "token_type": "Bearer",
                                       "expires_in": 21600, "refresh_token": "qr-qwen-refresh-2",
                                       "resource_url": self.root})

    def api(self, h, rec):
        if not self.authorized(rec):
            return self._invalid(h, 401, "Invalid access token or token expired",
                                 "invalid_api_key")
        if rec.method != "POST" or rec.path != "/v1/chat/completions":
            return self._invalid(h, 404, f"Invalid URL ({rec.method} {rec.path})")
        body = rec.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                or not body["messages"] or not body.get("model"):
            return self._invalid(h, 400, "model and messages are required")
        messages = body["messages"]
        call_ids: set[str] = set()
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant", "tool"):
                return self._invalid(h, 400, f"Invalid role {m.get('role')!r}")
            for tc in m.get("tool_calls") or []:
                call_ids.add(tc.get("id"))
            if m.get("role") == "tool" and m.get("tool_call_id") not in call_ids:
                return self._invalid(h, 400, "messages with role 'tool' must be a response to "
                                             "a preceding message with 'tool_calls'")
        tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
        real = [t for t in tools if t["name"] != self.EXT]
        last = messages[-1]
        n = self._next_id()
        calls: list[dict] = []
        if last.get("role") == "tool":
            text = f"{self.label} tool result: {openai_text(last.get('content'))}"
        elif real:
            text = self.PREAMBLE
            if any(t["name"] == self.EXT for t in tools):
                calls.append({"id": f"call_ext{n:04d}", "name": self.EXT, "arguments": "{}"})
            fn = real[0]
            calls.append({"id": f"call_qw{n:04d}", "name": fn["name"],
                          "arguments": json.dumps(schema_args(fn.get("parameters")))})
        else:
            user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
            text = f"{self.label} says: {openai_text(user.get('content'))}"
        finish = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
        cid = f"chatcmpl-qwen{n:04d}"
        model = body["model"]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                    "name": c["name"], "arguments": c["arguments"]}} for c in calls]
            return self.send_json(h, 200, {
                "id": cid, "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage})
        self.start_sse(h)

        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> None:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                   "model": model, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": finish_reason}], **extra}
            self.write(h, f"data: {json.dumps(obj)}\n\n")

        words = text.split(" ")
        for i, w in enumerate(words):
            delta = {"content": w if i == 0 else " " + w}
            if i == 0:
                delta["role"] = "assistant"
            chunk(delta)
        for k, call in enumerate(calls):
            frags = ["{}"] if call["name"] == self.EXT else _split3(call["arguments"])
            chunk({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                   "function": {"name": call["name"], "arguments": frags[0]}}]})
            for frag in frags[1:]:
                chunk({"tool_calls": [{"index": k, "function": {"arguments": frag}}]})
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            self.write(h, "data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "choices": [], "usage": usage}) + "\n\n")
        self.write(h, "data: [DONE]\n\n")
