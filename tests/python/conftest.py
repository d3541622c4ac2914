"""Shared fixtures: the aiproxy binary as a real process, mock upstreams and
SDK clients pointed at it.

* ``start_gateway(*args)`` starts the release binary (``$AIPROXY_BIN`` or
  ``target/release/aiproxy``) on a free loopback port, waits for
  ``GET /health`` to answer 200, writes its stderr to
  ``tests/output/<test>-<n>.stderr.log`` and, at teardown, stops it with
  SIGTERM and asserts exit status 0.
* ``gw`` is one shared gateway for the session with mock, openai-custom and
  claude-custom enabled (mock is the default), an API key, and the two mock
  upstreams of ``mock_upstreams.py``; ``upstreams`` resets their request
  logs and scripted errors before each test.
* ``gemini_cli`` is a second shared gateway serving only gemini-cli, in
  front of the Code Assist mock of ``oauth_upstreams.py`` (a valid token in
  its credentials file: no refresh), reset before each test that uses it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

import pytest

from mock_upstreams import AnthropicUpstream, OpenAIUpstream
from oauth_upstreams import CodeAssistUpstream
from support import (
    API_KEY,
    CLAUDE_UPSTREAM_KEY,
    GEMINI_CLI_PROJECT,
    GEMINI_CLI_TOKEN,
    OPENAI_UPSTREAM_KEY,
    Gateway,
    provider_args,
)


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


@pytest.fixture(scope="session")
def upstream_servers():
    openai_up = OpenAIUpstream(OPENAI_UPSTREAM_KEY)
    claude_up = AnthropicUpstream(CLAUDE_UPSTREAM_KEY)
    yield openai_up, claude_up
    openai_up.close()
    claude_up.close()


@dataclass
class Upstreams:
    openai: OpenAIUpstream
    claude: AnthropicUpstream

    def for_provider(self, provider: str):
        return {"openai-custom": self.openai, "claude-custom": self.claude}.get(provider)


@pytest.fixture
def upstreams(upstream_servers) -> Upstreams:
    """The mock upstreams, with empty request logs and no scripted errors."""
    for u in upstream_servers:
        u.reset()
    yield Upstreams(*upstream_servers)
    for u in upstream_servers:
        u.reset()


@pytest.fixture
def start_gateway(request):
    """Factory: ``start_gateway(*args) -> Gateway``; stopped (exit 0 asserted) at teardown."""
    started: list[Gateway] = []

    def start(*args: str, env: dict | None = None) -> Gateway:
        name = f"{_safe_name(request.node.nodeid)}-{len(started)}"
        gw = Gateway(list(args), name, env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        rc = gw.stop()
        assert rc == 0, f"aiproxy exited with {rc} after SIGTERM:\n{gw.stderr()[-4000:]}"


@pytest.fixture(scope="session")
def session_gateway(upstream_servers):
    openai_up, claude_up = upstream_servers
    g = Gateway(["--api-key", API_KEY, *provider_args(openai_up, claude_up),
                 "--cors-origins", "http://localhost:5173,http://example.test,http://x.test",
                 "--log-level", "info"], "session-gateway",
                # It lives for the whole run: its active health checks (a
                # model list from each upstream every 30 s) would land in
                # whichever test runs then, and tests assert which calls
                # reached the upstreams.
                env={"AIPROXY_LOAD_BALANCER_HEALTH_CHECK_INTERVAL": "1h"})
    yield g
    g.assert_running()
    rc = g.stop()
    assert rc == 0, f"aiproxy exited with {rc} after SIGTERM:\n{g.stderr()[-4000:]}"


@pytest.fixture
def gw(session_gateway):
    """The shared gateway: mock (default), openai-custom, claude-custom; API key required.
    Checked to be alive before and after each test that uses it."""
    session_gateway.assert_running()
    yield session_gateway
    session_gateway.assert_running()


@pytest.fixture
def nonce() -> str:
    """A short unique word, so no two tests send the same prompt (caches)."""
    return uuid.uuid4().hex[:10]





@dataclass
class GeminiCli:
    gw: Gateway
    up: CodeAssistUpstream


@pytest.fixture(scope="session")
def gemini_cli_session(tmp_path_factory):
    up = CodeAssistUpstream(GEMINI_CLI_TOKEN, GEMINI_CLI_PROJECT)
    creds = tmp_path_factory.mktemp("gemini-cli") / "oauth_creds.json"
    creds.write_text(json.dumps({
        "access_token": GEMINI_CLI_TOKEN, "refresh_token": "1//gemini-refresh",
        "token_type": "Bearer", "expiry_date": int(time.time() * 1000) + 24 * 3_600_000}))
    creds.chmod(0o600)
    g = Gateway(["--api-key", API_KEY, "--model-provider", "gemini-cli",
                 "--gemini-oauth-creds-file", str(creds), "--project-id", GEMINI_CLI_PROJECT,
                 "--gemini-base-url", up.root, "--cache-enabled=false",
                 "--request-max-retries", "0", "--log-level", "info"], "gemini-cli-gateway")
    yield GeminiCli(g, up)
    g.assert_running()
    rc = g.stop()
    up.close()
    assert rc == 0, f"aiproxy exited with {rc} after SIGTERM:\n{g.stderr()[-4000:]}"


@pytest.fixture
def gemini_cli(gemini_cli_session) -> GeminiCli:
    """The gemini-cli gateway and its Code Assist mock, with an empty request log."""
    gemini_cli_session.gw.assert_running()
    gemini_cli_session.up.reset()
    yield gemini_cli_session
    gemini_cli_session.up.reset()
    gemini_cli_session.gw.assert_running()
