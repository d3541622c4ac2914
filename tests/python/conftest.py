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
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from mock_upstreams import AnthropicUpstream, OpenAIUpstream
from support import API_KEY, CLAUDE_UPSTREAM_KEY, OPENAI_UPSTREAM_KEY, Gateway, provider_args


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
                 "--log-level", "info"], "session-gateway")
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


