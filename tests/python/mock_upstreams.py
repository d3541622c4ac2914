"""Mock upstream providers for the end-to-end tests.

Two small HTTP servers on 127.0.0.1 (port 0, stdlib ``ThreadingHTTPServer``,
daemon threads) that stand in for the real provider APIs aiproxy forwards to:

* ``OpenAIUpstream``: an OpenAI-compatible API (what ``openai-custom`` calls):
  ``POST /v1/chat/completions`` (unary, or SSE ending ``data: [DONE]`` with
  tool-call argument fragments and ``stream_options.include_usage``) and
  ``GET /v1/models``.
* ``AnthropicUpstream``: the Anthropic Messages API (what ``claude-custom``
  calls): ``POST /v1/messages`` (unary, or SSE with the full event sequence
  message_start … message_stop, ``tool_use`` blocks streamed as
  ``input_json_delta``) and ``GET /v1/models``.

Both answer deterministically *from the request*, so a test can tell that
aiproxy converted it: the text echoes the last user text and reports the
system prompt, a tool result is echoed back, an offered tool is called with
arguments derived from its schema. They validate what the real APIs validate
(the key, ``anthropic-version``, ``max_tokens`` for Anthropic, role order,
tool ids that match) and answer with the provider's real error bodies, so a
malformed conversion fails loudly instead of passing silently.

Every request is recorded (method, path, headers, JSON body). A test can
script errors with ``fail_next(status, …)``, a tool call's arguments with
``tool_args[name]``, slow streams down with
``stream_delay``, cut them short with ``truncate_after`` and see in
``aborted`` which streams the reader hung up on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

OPENAI_MODELS = ["gpt-upstream-large", "gpt-upstream-mini"]
# A last user message containing this makes either upstream answer with a
# short text followed by a call of *every* offered tool.
MULTI_TOOL_TRIGGER = "CALL ALL TOOLS"
ANTHROPIC_MODELS = ["claude-upstream-opus", "claude-upstream-haiku"]


@dataclass
class Recorded:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw: bytes


@dataclass
class ScriptedError:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    remaining: int | None = 1  # None: every request until reset()


def _words(text: str) -> list[str]:
    return text.split()


def example_args(schema: dict | None, string: Callable[[str], str]) -> dict:
    """Arguments for a tool call, derived from the tool's JSON schema;
    ``string(prop)`` gives the value of a string property."""
    out: dict[str, Any] = {}
    for prop, sub in ((schema or {}).get("properties") or {}).items():
        kind = str(sub.get("type", "string")).lower()
        if sub.get("enum"):
            out[prop] = sub["enum"][0]
        elif kind in ("integer", "number"):
            out[prop] = 3
        elif kind == "boolean":
            out[prop] = True
        elif kind == "array":
            out[prop] = []
        elif kind == "object":
            out[prop] = {}
        else:
            out[prop] = string(prop)
    return out


_JSON_TYPES = {"object", "string", "integer", "number", "boolean", "array", "null"}


def _valid_schema(schema: dict) -> bool:
    """A tool's parameters: a JSON Schema object with lower-case types, as
    OpenAI and Anthropic require (Gemini's ``OBJECT``/``STRING`` are not)."""
    def ok(s) -> bool:
        if not isinstance(s, dict):
            return False
        t = s.get("type")
        types = t if isinstance(t, list) else [t] if t is not None else []
        if any(x not in _JSON_TYPES for x in types):
            return False
        props = s.get("properties", {})
        if not isinstance(props, dict) or not all(ok(p) for p in props.values()):
            return False
        return "items" not in s or ok(s["items"])
    return isinstance(schema, dict) and schema.get("type") == "object" and ok(schema)


# ---- coding agents ---------------------------------------------------------
# Claude Code and Gemini CLI offer dozens of tools with every request. When
# the tools include a file reader, the mocks (like aiproxy's built-in mock
# provider) play a short agent session instead of calling the first tool:
# one call of the reader for the absolute path the prompt names, then a text
# answer quoting the result; with no path in the prompt, a text answer.


def read_tool(tools: list[tuple[str, Any]]) -> tuple[str, str] | None:
    """(name, path parameter) of the file reader among ``(name, schema)``
    pairs: a tool named like ``Read``/``read_file`` with a parameter named
    like ``file_path``/``absolute_path``/``path``."""
    for name, schema in tools:
        squashed = "".join(c for c in name.lower() if c.isalnum())
        if squashed not in ("read", "readfile", "readtextfile"):
            continue
        for prop in (schema or {}).get("properties") or {}:
            if "path" in prop.lower():
                return name, prop
    return None


def prompt_text(content: Any) -> str:
    """The prompt of a user message: its last text (agents put their
    context first), in any protocol's content shape."""
    if isinstance(content, str):
        return content
    texts = [p["text"] for p in content or [] if isinstance(p, dict) and "text" in p]
    return texts[-1] if texts else ""


def last_path(text: str) -> str | None:
    """The last absolute path in ``text``, without the punctuation around it."""
    found = None
    for word in text.split():
        word = word.lstrip("`'\"([").rstrip("`'\")],;:.?!")
        # ``</tag>`` is markup (Claude Code wraps context in tags), not a path.
        if len(word) > 1 and word.startswith("/") and "<" not in word and ">" not in word:
            found = word
    return found


def _split3(s: str) -> list[str]:
    """Splits a string into three fragments (some may be empty)."""
    a, b = len(s) // 3, 2 * len(s) // 3
    return [s[:a], s[a:b], s[b:]]


class _Truncated(Exception):
    """Raised inside a handler to end a stream abruptly."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MockUpstream:
    """Base class: server lifecycle, request log, scripted errors."""

    name = "upstream"

    def __init__(self, api_key: str):
        self.api_key = api_key
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._errors: list[ScriptedError] = []
        self._seq = 0
        self.stream_delay = 0.0  # seconds between streamed events
        self.truncate_after: int | None = None  # hang up after this many events
        self.aborted: list[Recorded] = []  # streams the reader hung up on
        # Tool name → the arguments to call it with, instead of ones derived
        # from its schema (an agent's shell tool asked to run a real command).
        self.tool_args: dict[str, dict] = {}
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output quiet
                pass

            def do_GET(self):
                upstream._dispatch(self, "GET")

            def do_POST(self):
                upstream._dispatch(self, "POST")

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-{self.port}", daemon=True
        )
        self._thread.start()

    # ---- test-facing API -------------------------------------------------

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def last(self, path: str) -> Recorded:
        reqs = self.requests_to(path)
        assert reqs, f"{self.name} saw no request to {path}; saw {[r.path for r in self.requests]}"
        return reqs[-1]

    def fail_next(self, status: int, body: Any = None, headers: dict | None = None,
                  times: int | None = 1) -> None:
        """The next ``times`` generation requests (None: all) get this error."""
        if body is None:
            body = self.default_error_body(status)
        with self._lock:
            self._errors.append(ScriptedError(status, body, dict(headers or {}), times))

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self.aborted.clear()
            self.stream_delay = 0.0
            self.truncate_after = None
            self.tool_args = {}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- plumbing --------------------------------------------------------

    def default_error_body(self, status: int) -> Any:
        raise NotImplementedError

    def _next_id(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _take_error(self) -> ScriptedError | None:
        with self._lock:
            if not self._errors:
                return None
            err = self._errors[0]
            if err.remaining is not None:
                err.remaining -= 1
                if err.remaining <= 0:
                    self._errors.pop(0)
            return err

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = _read_chunked(h.rfile)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body, raw)
        with self._lock:
            self._requests.append(rec)
        try:
            self.handle(h, rec)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.aborted.append(rec)
            h.close_connection = True
        except _Truncated:
            h.close_connection = True  # the stream just stops: no terminator

    def handle(self, h: BaseHTTPRequestHandler, rec: Recorded) -> None:
        raise NotImplementedError

    @staticmethod
    def send_json(h: BaseHTTPRequestHandler, status: int, obj: Any,
                  headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    @staticmethod
    def start_sse(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True

    def write(self, h: BaseHTTPRequestHandler, text: str) -> None:
        """Writes one SSE event, after ``stream_delay`` for all but the first;
        hangs up instead once ``truncate_after`` events were sent."""
        sent = getattr(h, "_events_sent", 0)
        if self.truncate_after is not None and sent >= self.truncate_after:
            raise _Truncated()
        if sent and self.stream_delay:
            time.sleep(self.stream_delay)
        h._events_sent = sent + 1
        h.wfile.write(text.encode())
        h.wfile.flush()


def _read_chunked(rfile) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return out
        out += rfile.read(size)
        rfile.readline()


# ---------------------------------------------------------------------------
# OpenAI-compatible upstream
# ---------------------------------------------------------------------------


def openai_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class OpenAIUpstream(MockUpstream):
    """An OpenAI-compatible chat completions API.

    Answer rules (deterministic):
    * tools offered, ``tool_choice`` not ``"none"`` and the last message not a
      ``tool`` result → a call of the named (or first) tool with arguments
      from its schema (strings ``"openai-<prop>"``, numbers 3, booleans true),
      or text then calls of every tool if the prompt has MULTI_TOOL_TRIGGER;
    * last message a ``tool`` result → ``"openai tool result: <content>"``;
    * else ``"openai says: <last user text>"`` plus ``" [system: <text>]"``
      when a system/developer message was sent; ``max_tokens`` (or
      ``max_completion_tokens``) truncates the words, finish reason length.
    """

    name = "openai-upstream"

    def default_error_body(self, status: int) -> Any:
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }
        typ, code = kinds.get(status, ("server_error", None))
        msg = {
            429: "Rate limit reached for gpt-upstream-mini on requests per min (RPM): "
                 "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            401: "Incorrect API key provided: sk-***. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.",
        }.get(status, f"upstream failure {status}")
        return {"error": {"message": msg, "type": typ, "param": None, "code": code}}

    def handle(self, h, rec):
        path = rec.path.split("?")[0]
        auth = rec.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return self.send_json(h, 401, self.default_error_body(401))
        if rec.method == "GET" and path == "/v1/models":
            return self.send_json(h, 200, {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 1700000000,
                          "owned_by": "upstream"} for m in OPENAI_MODELS],
            })
        if rec.method == "POST" and path == "/v1/chat/completions":
            return self.chat(h, rec)
        return self.send_json(h, 404, {"error": {
            "message": f"Invalid URL ({rec.method} {path})", "type": "invalid_request_error",
            "param": None, "code": None}})

    def _invalid(self, h, message: str, param: str | None = None):
        return self.send_json(h, 400, {"error": {
            "message": message, "type": "invalid_request_error", "param": param, "code": None}})

    def chat(self, h, rec):
        body = rec.body
        if not isinstance(body, dict):
            return self._invalid(h, "We could not parse the JSON body of your request.")
        err = self._take_error()
        if err:
            return self.send_json(h, err.status, err.body, err.headers)
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            return self._invalid(h, "you must provide a model parameter", "model")
        if not isinstance(messages, list) or not messages:
            return self._invalid(h, "messages must be a non-empty array", "messages")
        # Tool messages must answer a preceding assistant tool call.
        call_ids: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role")
            if role not in ("system", "developer", "user", "assistant", "tool"):
                return self._invalid(h, f"Invalid value: '{role}'.", f"messages.[{i}].role")
            for tc in m.get("tool_calls") or []:
                call_ids.add(tc.get("id"))
                try:
                    json.loads(tc["function"]["arguments"])
                except (KeyError, TypeError, ValueError):
                    return self._invalid(h, "tool call arguments must be a JSON string",
                                         f"messages.[{i}].tool_calls")
            if role == "tool" and m.get("tool_call_id") not in call_ids:
                return self._invalid(
                    h, "Invalid parameter: messages with role 'tool' must be a response to a "
                       "preceeding message with 'tool_calls'.", f"messages.[{i}].role")
        tools = body.get("tools") or []
        for i, t in enumerate(tools):
            if t.get("type") != "function" or not t.get("function", {}).get("name"):
                return self._invalid(h, "tools[].function.name is required", "tools")
            params = t["function"].get("parameters")
            if params is not None and not _valid_schema(params):
                return self._invalid(
                    h, f"Invalid schema for function '{t['function']['name']}': "
                       f"{json.dumps(params)} is not a valid JSON schema object.",
                    f"tools[{i}].function.parameters")
        choice = body.get("tool_choice", "auto")
        last = messages[-1]
        n = self._next_id()
        prompt_words = sum(len(_words(openai_text(m.get("content")))) for m in messages)
        tool_calls: list[dict] = []
        words: list[str] = []
        finish = "stop"
        reader = read_tool([(t["function"]["name"], t["function"].get("parameters"))
                            for t in tools])
        if reader and choice != "none":
            # An agent session: read the named file once, then quote it.
            user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
            path = last_path(prompt_text(user.get("content")))
            since = []
            for m in reversed(messages):
                if m.get("role") == "assistant":
                    break
                since.append(m)
            result = next((m for m in since if m.get("role") == "tool"), None)
            if path and not any(m.get("role") == "tool" for m in messages):
                tool_calls.append({"id": f"call_up{n:06d}_0", "name": reader[0],
                                   "arguments": json.dumps({reader[1]: path})})
                finish = "tool_calls"
            elif result is not None:
                words = _words("openai tool result: " + openai_text(result.get("content")))
            else:
                words = _words("openai says: " + openai_text(user.get("content")))
        elif tools and choice != "none" and last.get("role") != "tool":
            wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            if MULTI_TOOL_TRIGGER in openai_text(last.get("content")):
                chosen = tools  # every tool, after a short text
                words = ["Calling", "tools."]
            else:
                chosen = [next((t for t in tools if t["function"]["name"] == wanted), tools[0])]
            for k, tool in enumerate(chosen):
                fn = tool["function"]
                args = json.dumps(self.tool_args.get(fn["name"]) or
                                  example_args(fn.get("parameters"), lambda p: f"openai-{p}"))
                tool_calls.append({"id": f"call_up{n:06d}_{k}", "name": fn["name"],
                                   "arguments": args})
            finish = "tool_calls"
        else:
            if last.get("role") == "tool":
                text = "openai tool result: " + openai_text(last.get("content"))
            else:
                user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
                text = "openai says: " + openai_text(user.get("content"))
                system = "\n".join(openai_text(m.get("content")) for m in messages
                                   if m.get("role") in ("system", "developer"))
                if system:
                    text += f" [system: {system}]"
            words = _words(text)
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            if isinstance(limit, int) and len(words) > limit:
                words = words[:max(limit, 1)]
                finish = "length"
        completion = len(words) + sum(max(1, len(c["arguments"]) // 4) for c in tool_calls)
        usage = {"prompt_tokens": max(prompt_words, 1), "completion_tokens": completion,
                 "total_tokens": max(prompt_words, 1) + completion}
        cid = f"chatcmpl-up{n:06d}"
        created = int(time.time())
        if body.get("stream"):
            return self._stream(h, cid, created, model, words, tool_calls, finish, usage,
                                bool((body.get("stream_options") or {}).get("include_usage")))
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words) if words else None,
                                   "refusal": None}
        if tool_calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"], "arguments": c["arguments"]}}
                                     for c in tool_calls]
        return self.send_json(h, 200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": "fp_upstream",
        })

    def _stream(self, h, cid, created, model, words, tool_calls, finish, usage, include_usage):
        self.start_sse(h)

        def chunk(delta, finish_reason=None, **extra):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "fp_upstream",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                "finish_reason": finish_reason}]}
            if include_usage:
                obj["usage"] = None
            obj.update(extra)
            self.write(h, f"data: {json.dumps(obj)}\n\n")

        chunk({"role": "assistant", "content": "", "refusal": None})
        for i, w in enumerate(words):
            chunk({"content": w if i == 0 else " " + w})
        for k, call in enumerate(tool_calls):
            chunk({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                   "function": {"name": call["name"], "arguments": ""}}]})
            for frag in _split3(call["arguments"]):
                chunk({"tool_calls": [{"index": k, "function": {"arguments": frag}}]})
        chunk({}, finish)
        if include_usage:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "fp_upstream", "choices": [],
                   "usage": usage}
            self.write(h, f"data: {json.dumps(obj)}\n\n")
        self.write(h, "data: [DONE]\n\n")


# ---------------------------------------------------------------------------
# Anthropic-compatible upstream
# ---------------------------------------------------------------------------


def _claude_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content
                        if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _tool_result_text(block: dict) -> str:
    c = block.get("content")
    if isinstance(c, list):
        return " ".join(b.get("text", "") for b in c if b.get("type") == "text")
    return c if isinstance(c, str) else json.dumps(c)


class AnthropicUpstream(MockUpstream):
    """The Anthropic Messages API.

    Answer rules (deterministic):
    * tools offered, ``tool_choice.type`` not ``none`` and the last user turn
      not carrying a ``tool_result`` → a ``tool_use`` of the named (or first)
      tool with arguments from ``input_schema`` (strings ``"claude-<prop>"``,
      numbers 3, booleans true), or text then every tool for MULTI_TOOL_TRIGGER;
    * last user turn carries ``tool_result`` → ``"claude tool result: <text>"``;
    * else ``"claude says: <last user text>"`` plus ``" [system: <text>]"``;
      ``max_tokens`` truncates the words, stop reason ``max_tokens``.
    """

    name = "anthropic-upstream"

    def default_error_body(self, status: int) -> Any:
        typ = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        msg = {529: "Overloaded", 401: "invalid x-api-key",
               429: "Number of request tokens has exceeded your per-minute rate limit"}.get(
            status, f"upstream failure {status}")
        return {"type": "error", "error": {"type": typ, "message": msg},
                "request_id": "req_upstream0001"}

    def _invalid(self, h, message: str):
        return self.send_json(h, 400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": message}})

    def handle(self, h, rec):
        path = rec.path.split("?")[0]
        # The API takes the key as x-api-key (what aiproxy sends) or, as
        # recent SDKs send it, as a Bearer token.
        if self.api_key not in (rec.headers.get("x-api-key"),
                                rec.headers.get("authorization", "").removeprefix("Bearer ")):
            return self.send_json(h, 401, self.default_error_body(401))
        if not rec.headers.get("anthropic-version"):
            return self._invalid(h, "anthropic-version: header is required")
        if rec.method == "GET" and path == "/v1/models":
            data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(),
                     "created_at": "2025-05-14T00:00:00Z"} for m in ANTHROPIC_MODELS]
            return self.send_json(h, 200, {"data": data, "has_more": False,
                                           "first_id": data[0]["id"], "last_id": data[-1]["id"]})
        if rec.method == "POST" and path == "/v1/messages":
            return self.messages(h, rec)
        return self.send_json(h, 404, {"type": "error", "error": {
            "type": "not_found_error", "message": f"Not found: {path}"}})

    def _validate(self, body) -> str | None:
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "messages: at least one message is required"
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            return "system: Input should be a valid string or list"
        prev_tool_ids: set[str] = set()  # tool_use ids of the previous message
        for i, m in enumerate(msgs):
            role = m.get("role")
            if role not in ("user", "assistant", "system"):
                return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
            content = m.get("content")
            if not isinstance(content, (str, list)):
                return f"messages.{i}.content: Input should be a valid string or list"
            blocks = content if isinstance(content, list) else []
            if role == "system":
                # A system message inside `messages` (the current API) holds
                # text only and does not break a tool_use/tool_result pair.
                if any(b.get("type") != "text" for b in blocks):
                    return f"messages.{i}: system messages hold text blocks only"
                continue
            if prev_tool_ids:
                answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
                if prev_tool_ids - answered:
                    return (f"messages.{i}: `tool_use` ids were found without `tool_result` "
                            "blocks immediately after: " + ", ".join(sorted(prev_tool_ids - answered))
                            + ". Each `tool_use` block must have a corresponding `tool_result` "
                            "block in the next message.")
            tool_ids = prev_tool_ids
            prev_tool_ids = set()
            for b in blocks:
                t = b.get("type")
                if t == "tool_use":
                    if role != "assistant" or not isinstance(b.get("input"), dict):
                        return f"messages.{i}: tool_use blocks need role assistant and an object input"
                    prev_tool_ids.add(b.get("id"))
                elif t == "tool_result":
                    if role != "user":
                        return f"messages.{i}: tool_result blocks must be in a user message"
                    if b.get("tool_use_id") not in tool_ids:
                        return (f"messages.{i}.content: unexpected `tool_use_id` found in "
                                f"`tool_result` blocks: {b.get('tool_use_id')}. Each "
                                "`tool_result` block must have a corresponding `tool_use` "
                                "block in the previous message.")
                elif t == "text":
                    if not isinstance(b.get("text"), str) or not b["text"]:
                        return f"messages.{i}: text content blocks must be non-empty"
                elif t not in ("image", "document", "thinking", "redacted_thinking"):
                    return f"messages.{i}: unknown content block type {t!r}"
        for i, t in enumerate(body.get("tools") or []):
            if t.get("type", "custom") != "custom":
                continue  # a server tool (web search…): its own fields
            if not t.get("name") or not isinstance(t.get("input_schema"), dict):
                return "tools: each tool needs name and input_schema"
            if not _valid_schema(t["input_schema"]):
                return f"tools.{i}.custom.input_schema: JSON schema is invalid"
        if "temperature" in body and "top_p" in body:
            # Newer Claude models reject both at once.
            return "`temperature` and `top_p` cannot both be specified for this model."
        return None

    def messages(self, h, rec):
        body = rec.body
        if not isinstance(body, dict):
            return self._invalid(h, "There was an issue with the JSON body of your request.")
        err = self._take_error()
        if err:
            return self.send_json(h, err.status, err.body, err.headers)
        problem = self._validate(body)
        if problem:
            return self._invalid(h, problem)
        msgs = body["messages"]
        last = msgs[-1]
        last_blocks = last["content"] if isinstance(last["content"], list) else []
        results = [b for b in last_blocks if b.get("type") == "tool_result"]
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        n = self._next_id()
        prompt_words = sum(len(_words(_claude_text(m["content"]))) for m in msgs)
        blocks: list[dict] = []
        stop = "end_turn"
        reader = read_tool([(t.get("name", ""), t.get("input_schema")) for t in tools])
        agent_path = None
        if reader and choice.get("type") != "none":
            # An agent session: read the named file once, then quote it.
            # Its last message may be a system one: look past it.
            since = []
            for m in reversed(msgs):
                if m["role"] == "assistant":
                    break
                since.append(m)
            results = [b for m in since if m["role"] == "user" and isinstance(m["content"], list)
                       for b in m["content"] if b.get("type") == "tool_result"]
            answered = any(b.get("type") == "tool_result" for m in msgs
                           if isinstance(m["content"], list) for b in m["content"])
            user = next((m for m in reversed(msgs) if m["role"] == "user"), {})
            agent_path = None if answered else last_path(prompt_text(user.get("content")))
        if agent_path:
            blocks.append({"type": "tool_use", "id": f"toolu_up{n:06d}_0", "name": reader[0],
                           "input": {reader[1]: agent_path}})
            stop = "tool_use"
        elif (tools and not reader and choice.get("type") != "none" and not results
              and last["role"] == "user"):
            wanted = choice.get("name") if choice.get("type") == "tool" else None
            if MULTI_TOOL_TRIGGER in _claude_text(last["content"]):
                chosen = tools  # every tool, after a short text
                blocks.append({"type": "text", "text": "Calling tools."})
            else:
                chosen = [next((t for t in tools if t["name"] == wanted), tools[0])]
            for k, tool in enumerate(chosen):
                blocks.append({"type": "tool_use", "id": f"toolu_up{n:06d}_{k}",
                               "name": tool["name"],
                               "input": self.tool_args.get(tool["name"]) or
                               example_args(tool["input_schema"], lambda p: f"claude-{p}")})
            stop = "tool_use"
        else:
            if results:
                text = "claude tool result: " + " ".join(_tool_result_text(r) for r in results)
            else:
                user = next((m for m in reversed(msgs) if m["role"] == "user"), {})
                text = "claude says: " + _claude_text(user.get("content"))
                system = body.get("system")
                if isinstance(system, list):
                    system = "\n".join(b.get("text", "") for b in system)
                if system and not reader:  # an agent's prompt is pages long
                    text += f" [system: {system}]"
            words = _words(text)
            if len(words) > body["max_tokens"]:
                words = words[:body["max_tokens"]]
                stop = "max_tokens"
            blocks.append({"type": "text", "text": " ".join(words)})
        out_tokens = sum(len(_words(b.get("text", ""))) or max(1, len(json.dumps(b.get("input"))) // 4)
                         for b in blocks)
        usage = {"input_tokens": max(prompt_words, 1), "output_tokens": out_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        mid = f"msg_up{n:06d}"
        model = body["model"]
        if body.get("stream"):
            return self._stream(h, mid, model, blocks, stop, usage)
        return self.send_json(h, 200, {
            "id": mid, "type": "message", "role": "assistant", "model": model,
            "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage,
        })

    def _stream(self, h, mid, model, blocks, stop, usage):
        self.start_sse(h)

        def event(obj):
            self.write(h, f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n")

        event({"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1}}})
        event({"type": "ping"})
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                event({"type": "content_block_start", "index": i,
                       "content_block": {"type": "text", "text": ""}})
                for j, w in enumerate(_words(b["text"])):
                    event({"type": "content_block_delta", "index": i,
                           "delta": {"type": "text_delta", "text": w if j == 0 else " " + w}})
            else:
                event({"type": "content_block_start", "index": i,
                       "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"],
                                         "input": {}}})
                for frag in [""] + _split3(json.dumps(b["input"])):
                    event({"type": "content_block_delta", "index": i,
                           "delta": {"type": "input_json_delta", "partial_json": frag}})
            event({"type": "content_block_stop", "index": i})
        event({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
               "usage": {"output_tokens": usage["output_tokens"]}})
        event({"type": "message_stop"})
