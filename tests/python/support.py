"""Helpers shared by the end-to-end tests: the aiproxy process (``Gateway``),
constants, raw HTTP, SDK clients pointed at a gateway, and the answers each
provider gives (see mock_upstreams.py and the built-in mock provider).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = REPO_ROOT / "tests" / "output"

API_KEY = "sk-gw-test-key-2f1c"
OPENAI_UPSTREAM_KEY = "sk-openai-upstream-9a7b"
CLAUDE_UPSTREAM_KEY = "sk-ant-upstream-4c2d"
# The shared gemini-cli gateway's Code Assist project and access token.
GEMINI_CLI_PROJECT = "mock-project-shared"
GEMINI_CLI_TOKEN = "ya29.shared-valid"

PROVIDERS = ["mock", "openai-custom", "claude-custom"]

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


def binary_path() -> Path:
    env = os.environ.get("AIPROXY_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "release" / "aiproxy"
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def gateway_environment() -> dict:
    """The test runner's environment minus ``AIPROXY_*`` (``AIPROXY_BIN`` is
    the runner's own; the gateway reads that prefix as configuration)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIPROXY_")}


# Ports handed out by free_port in this test process: the kernel may
# offer a number it just offered again before the process meant for it
# has bound it, and two processes given one port collide.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, never handed out before
    by this test process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Gateway:
    """One running aiproxy process."""

    def __init__(self, args: list[str], log_name: str, env: dict | None = None):
        self.binary = binary_path()
        if not self.binary.exists():
            pytest.fail(f"aiproxy binary not found at {self.binary} (build it or set AIPROXY_BIN)")
        self.port = free_port()
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), *args]
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        self.stderr_path = OUTPUT_DIR / f"{log_name}.stderr.log"
        self.stdout_path = OUTPUT_DIR / f"{log_name}.stdout.log"
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), *self.args],
            stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr,
            env={**gateway_environment(), **(env or {})}, cwd=OUTPUT_DIR,
            # Its own process group: a signal meant for the test runner's
            # group (Ctrl-C, a tool cleaning up its children) is not one
            # for the gateway, whose lifetime the fixtures control.
            start_new_session=True,
        )
        self.returncode: int | None = None
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_files()
                pytest.fail(f"aiproxy exited with {self.proc.returncode} at startup:\n{self.stderr()}")
            try:
                r = self.request("GET", "/health", timeout=2)
                if r.status == 200:
                    return
                last = f"status {r.status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.02)  # readiness poll interval, not synchronisation
        self.proc.kill()
        self.proc.wait(5)
        self._close_files()
        pytest.fail(f"aiproxy not ready within {STARTUP_TIMEOUT}s ({last}):\n{self.stderr()}")

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict | None = None, timeout: float = 30) -> RawResponse:
        """A raw HTTP request (for tests about bytes, headers and status codes)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if body is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def assert_running(self) -> None:
        """Fails clearly if the process is gone (nothing in the tests stops it early)."""
        rc = self.proc.poll()
        if rc is not None:
            pytest.fail(f"aiproxy (pid {self.proc.pid}) is no longer running (exit status {rc}); "
                        f"something outside the test signalled or killed it. Last log lines:\n"
                        + "\n".join(self.stderr().splitlines()[-8:]))

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = -9
            self._close_files()
        return self.returncode

    def _close_files(self) -> None:
        for f in (self._stderr, self._stdout):
            if not f.closed:
                f.close()

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")


# ---- SDK client helpers ----------------------------------------------------


def openai_client(gw: Gateway, provider: str | None = None, key: str = API_KEY, **kw):
    import openai

    prefix = f"/{provider}" if provider else ""
    return openai.OpenAI(api_key=key, base_url=f"{gw.url}{prefix}/v1", max_retries=0,
                         timeout=30, **kw)


def anthropic_client(gw: Gateway, provider: str | None = None, key: str = API_KEY, **kw):
    import anthropic

    prefix = f"/{provider}" if provider else ""
    return anthropic.Anthropic(api_key=key, base_url=f"{gw.url}{prefix}", max_retries=0,
                               timeout=30, **kw)


def gemini_client(gw: Gateway, provider: str | None = None, key: str = API_KEY,
                  headers: dict | None = None):
    from google import genai
    from google.genai import types

    prefix = f"/{provider}" if provider else ""
    opts = types.HttpOptions(base_url=f"{gw.url}{prefix}", api_version="v1beta",
                             timeout=30_000, headers=headers)
    client = genai.Client(api_key=key, http_options=opts)
    # genai closes its HTTP client when the Client object is garbage
    # collected, even while `client.models` is in use, so that
    # `gemini_client(gw).models.list()` would fail: keep clients alive.
    _GENAI_CLIENTS.append(client)
    return client


_GENAI_CLIENTS: list = []


def expected_answer_start(provider: str, prompt: str) -> str:
    """How each provider's answer to a plain prompt starts."""
    if provider == "mock":
        return f'Mock answer to "{" ".join(prompt.split()[:8])}":'
    if provider == "openai-custom":
        return f"openai says: {prompt}"
    return f"claude says: {prompt}"


def expected_tool_args(provider: str) -> dict:
    """Arguments each provider puts in its call of the WEATHER tool below."""
    if provider == "mock":
        return {"city": "mock-city", "days": 1}
    if provider == "openai-custom":
        return {"city": "openai-city", "days": 3}
    return {"city": "claude-city", "days": 3}


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "description": "Forecast length"},
    },
    "required": ["city"],
}


def provider_args(openai_up, claude_up, providers="mock,openai-custom,claude-custom") -> list[str]:
    """Flags enabling ``providers`` with both mock upstreams configured."""
    return [
        "--model-provider", providers,
        "--openai-api-key", OPENAI_UPSTREAM_KEY,
        "--openai-base-url", f"{openai_up.root}/v1",
        "--claude-api-key", CLAUDE_UPSTREAM_KEY,
        "--claude-base-url", claude_up.root,
    ]


# ---- what the upstreams must have received ---------------------------------


def claude_system_text(body: dict) -> str:
    """The ``system`` of an Anthropic request body as one string."""
    system = body.get("system")
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system)
    return system or ""


def claude_text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def openai_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def assert_openai_upstream_call(rec, *, model: str, system: str | None, prompt: str,
                                max_tokens: int | None = None, temperature=None):
    """The openai-custom upstream got a well-converted chat completion request."""
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.headers.get("authorization") == f"Bearer {OPENAI_UPSTREAM_KEY}", rec.headers
    assert API_KEY not in json.dumps(rec.headers), "client key forwarded upstream"
    body = rec.body
    assert body["model"] == model
    msgs = body["messages"]
    if system is not None:
        assert msgs[0]["role"] in ("system", "developer"), msgs
        assert openai_text(msgs[0]["content"]) == system
        msgs = msgs[1:]
    assert msgs[-1]["role"] == "user"
    assert prompt in openai_text(msgs[-1]["content"])
    if max_tokens is not None:
        assert body.get("max_tokens", body.get("max_completion_tokens")) == max_tokens, body
    if temperature is not None:
        assert "temperature" in body and body["temperature"] == temperature, body


def assert_claude_upstream_call(rec, *, model: str, system: str | None, prompt: str,
                                max_tokens: int | None = None, temperature=None):
    """The claude-custom upstream got a well-converted Messages request."""
    assert rec.method == "POST" and rec.path == "/v1/messages"
    assert rec.headers.get("x-api-key") == CLAUDE_UPSTREAM_KEY, rec.headers
    assert rec.headers.get("anthropic-version"), rec.headers
    assert API_KEY not in json.dumps(rec.headers), "client key forwarded upstream"
    body = rec.body
    assert body["model"] == model
    if system is not None:
        assert claude_system_text(body) == system
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])
    assert body["messages"][-1]["role"] == "user"
    assert prompt in claude_text(body["messages"][-1]["content"])
    assert isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 0
    if max_tokens is not None:
        assert body["max_tokens"] == max_tokens
    if temperature is not None:
        assert "temperature" in body and body["temperature"] == temperature, body
    assert "top_p" not in body, "top_p sent although the client did not set it"


def assert_upstream_call(upstreams, provider: str, **expected):
    """Checks the one generation request ``provider``'s upstream got (none for mock)."""
    if provider == "mock":
        assert upstreams.openai.requests_to("/v1/chat/completions") == []
        assert upstreams.claude.requests_to("/v1/messages") == []
    elif provider == "openai-custom":
        assert len(upstreams.openai.requests_to("/v1/chat/completions")) == 1
        assert upstreams.claude.requests_to("/v1/messages") == []
        assert_openai_upstream_call(upstreams.openai.last("/v1/chat/completions"), **expected)
    else:
        assert len(upstreams.claude.requests_to("/v1/messages")) == 1
        assert upstreams.openai.requests_to("/v1/chat/completions") == []
        assert_claude_upstream_call(upstreams.claude.last("/v1/messages"), **expected)


def expected_tool_answer_start(provider: str, prompt: str, result: str) -> str:
    """How each provider answers once it got the tool result ``result``."""
    if provider == "mock":
        return expected_answer_start(provider, prompt)
    if provider == "openai-custom":
        return f"openai tool result: {result}"
    return f"claude tool result: {result}"


def expected_models(provider: str) -> set[str]:
    from mock_upstreams import ANTHROPIC_MODELS, OPENAI_MODELS

    return {"mock": {"mock-small", "mock-large"}, "openai-custom": set(OPENAI_MODELS),
            "claude-custom": set(ANTHROPIC_MODELS)}[provider]
