"""Claude Code and Gemini CLI for real (issue 17): the agents from npm,
pinned in tests/agents/package.json and installed by tests/run.sh, run
headless against the release binary, each with a throwaway ``HOME``, its
telemetry and auto-update off, and a dead proxy for anything that is not on
the loopback interface.

For each agent and each of the providers mock (built in), claude-custom,
openai-custom and gemini-cli (the mocks of mock_upstreams.py and
oauth_upstreams.py), a plain prompt answered in one request, and one
session with a tool round trip: the prompt names a
file in the agent's temporary working directory; the upstream (or the
built-in mock) answers the first request, whose tools include the agent's
file reader (Claude Code's ``Read``, Gemini CLI's ``read_file``), with one
call reading that file; the agent reads it; the second request carries the
file's content as a tool result; the agent prints the final answer, which
quotes it, and exits 0.

What the upstream received is checked against what the agent sent, taken
from the same-family session (claude-custom for Claude Code, gemini-cli
for Gemini CLI), where aiproxy passes the body through: no system text
(Claude Code's system blocks and its system messages inside ``messages``,
Gemini CLI's ``systemInstruction``), no tool and no field with an
equivalent is lost. For the built-in mock, which has no wire, the body it
was given is read from the gateway's ``--log-prompts`` lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mock_upstreams import AnthropicUpstream, OpenAIUpstream
from oauth_upstreams import CodeAssistUpstream
from support import (
    API_KEY,
    CLAUDE_UPSTREAM_KEY,
    OPENAI_UPSTREAM_KEY,
    REPO_ROOT,
    Gateway,
)

pytestmark = pytest.mark.timeout(300)

BIN = REPO_ROOT / "tests" / "agents" / "node_modules" / ".bin"
AGENTS = {"claude-code": BIN / "claude", "gemini-cli": BIN / "gemini"}
# The provider whose family is the agent's own: aiproxy passes its
# requests through, so its upstream sees exactly what the agent sent.
SAME_FAMILY = {"claude-code": "claude-custom", "gemini-cli": "gemini-cli"}
PROVIDERS = ["mock", "claude-custom", "openai-custom", "gemini-cli"]
# Gemini CLI asks a classifier model to pick a model unless given one.
GEMINI_MODEL = "gemini-2.5-pro"
PROJECT = "agents-project-1"
CODE_ASSIST_TOKEN = "ya29.agents"
RUN_TIMEOUT = 120
# What each upstream says once it has the tool result.
ANSWER_LABEL = {"mock": "Mock answer to", "claude-custom": "claude tool result:",
                "openai-custom": "openai tool result:", "gemini-cli": "gemini tool result:"}
# The wire protocol each provider's upstream speaks.
WIRE = {"mock": "openai", "openai-custom": "openai", "claude-custom": "anthropic",
        "gemini-cli": "gemini"}


def require_agent(agent: str) -> Path:
    path = AGENTS[agent]
    if not path.exists():
        pytest.fail(f"{path} missing: tests/run.sh installs the agents "
                    "(npm ci in tests/agents, then Claude Code's install.cjs)")
    return path


# ---- the gateway and its upstreams ----------------------------------------


@dataclass
class Env:
    gw: Gateway
    openai: OpenAIUpstream
    claude: AnthropicUpstream
    code_assist: CodeAssistUpstream


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    openai_up = OpenAIUpstream(OPENAI_UPSTREAM_KEY)
    claude_up = AnthropicUpstream(CLAUDE_UPSTREAM_KEY)
    code_assist = CodeAssistUpstream(CODE_ASSIST_TOKEN, PROJECT)
    conf = tmp_path_factory.mktemp("agents-gateway")
    creds = conf / "gemini-creds.json"
    creds.write_text(json.dumps({"access_token": CODE_ASSIST_TOKEN,
                                 "refresh_token": "1//gemini-refresh",
                                 "token_type": "Bearer", "expiry_date": 4102444800000}))
    creds.chmod(0o600)
    config = conf / "aiproxy.yaml"
    config.write_text(f"gemini:\n  token_url: \"{code_assist.root}/token\"\n")
    gw = Gateway([
        "--config", str(config), "--api-key", API_KEY,
        "--model-provider", "mock,openai-custom,claude-custom,gemini-cli",
        "--openai-api-key", OPENAI_UPSTREAM_KEY, "--openai-base-url", f"{openai_up.root}/v1",
        "--claude-api-key", CLAUDE_UPSTREAM_KEY, "--claude-base-url", claude_up.root,
        "--gemini-oauth-creds-file", str(creds), "--project-id", PROJECT,
        "--gemini-base-url", code_assist.root,
        # Every agent request reaches its upstream exactly once.
        "--cache-enabled=false", "--request-max-retries", "0",
        # The built-in mock's input, for the assertions.
        "--log-prompts", "--log-format", "json",
    ], "agents-gateway")
    yield Env(gw, openai_up, claude_up, code_assist)
    rc = gw.stop()
    for up in (openai_up, claude_up, code_assist):
        up.close()
    assert rc == 0, f"aiproxy exited with {rc} after SIGTERM:\n{gw.stderr()[-4000:]}"


# ---- running an agent ------------------------------------------------------


def agent_environment(agent: str, base_url: str, home: Path) -> dict[str, str]:
    """Only what the agent needs: no inherited keys, tokens or settings."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        # Whatever is not on the loopback interface goes to a closed port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if agent == "claude-code":
        env.update({
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": API_KEY,
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        })
    else:
        env.update({
            "GOOGLE_GEMINI_BASE_URL": base_url,
            "GEMINI_API_KEY": API_KEY,
            # Headless runs refuse an untrusted working directory.
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
        })
        settings = home / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(GEMINI_SETTINGS, indent=2))
    return env


# ~/.gemini/settings.json: API-key auth (else "Invalid auth method
# selected"), no update checks, no usage statistics, no telemetry.
GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


@dataclass
class Session:
    agent: str
    provider: str
    workdir: Path
    home: Path
    token: str
    returncode: int
    stdout: str
    stderr: str
    answer: str
    requests: list[dict] = field(default_factory=list)  # upstream bodies, in order

    def describe(self) -> str:
        return (f"{self.agent} via {self.provider}: exit {self.returncode}\n"
                f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}")


def upstream_bodies(e: Env, provider: str, log_offset: int) -> list[dict]:
    """Generation request bodies the provider's upstream got, in its protocol."""
    if provider == "mock":
        bodies = []
        for line in e.gw.stderr()[log_offset:].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "prompt":
                bodies.append(json.loads(entry["body"]))
        return bodies
    if provider == "openai-custom":
        return [r.body for r in e.openai.requests_to("/v1/chat/completions")]
    if provider == "claude-custom":
        return [r.body for r in e.claude.requests_to("/v1/messages")]
    return [r.body["request"] for r in e.code_assist.generations()]


def run_session(e: Env, agent: str, provider: str, root: Path, read: bool) -> Session:
    """One headless run; with ``read`` the prompt asks to read a file."""
    exe = require_agent(agent)
    workdir, home = root / "work", root / "home"
    workdir.mkdir(parents=True)
    home.mkdir()
    token = f"aiproxy-file-token-{root.name[-8:]}"
    (workdir / "notes.txt").write_text(f"{token}\n")
    if read:
        prompt = f"Read the file {workdir}/notes.txt and tell me what it says."
    else:
        prompt = f"Say hello to {token}."
    for up in (e.openai, e.claude, e.code_assist):
        up.reset()
    log_offset = len(e.gw.stderr())
    base_url = f"{e.gw.url}/{provider}"
    if agent == "claude-code":
        cmd = [str(exe), "-p", prompt, "--output-format", "json"]
    else:
        cmd = [str(exe), "-m", GEMINI_MODEL, "-p", prompt, "-o", "json"]
    proc = subprocess.run(cmd, cwd=workdir, env=agent_environment(agent, base_url, home),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    answer = ""
    try:
        out = json.loads(proc.stdout)
        answer = out.get("result") if agent == "claude-code" else out.get("response")
    except ValueError:
        pass
    return Session(agent, provider, workdir, home, token, proc.returncode, proc.stdout,
                   proc.stderr, answer or "", upstream_bodies(e, provider, log_offset))


@pytest.fixture(scope="module")
def sessions(env, tmp_path_factory):
    """``sessions(agent, provider, read=True)``: that session, run once per
    module (the same-family one is every other test's reference)."""
    done: dict[tuple[str, str, bool], Session] = {}

    def get(agent: str, provider: str, read: bool = True) -> Session:
        key = (agent, provider, read)
        if key not in done:
            env.gw.assert_running()
            root = tmp_path_factory.mktemp(f"{agent}-{provider}")
            done[key] = run_session(env, agent, provider, root, read)
        return done[key]

    return get


# ---- reading request bodies in each wire protocol ---------------------------


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content
                         if isinstance(b, dict) and b.get("type", "text") == "text")
    return ""


def system_texts(body: dict, wire: str) -> list[str]:
    """Every system text of a request, in order, one string per text."""
    if wire == "anthropic":
        system = body.get("system") or []
        texts = [system] if isinstance(system, str) else [b["text"] for b in system if b["text"]]
        return texts + [text_of(m["content"]) for m in body["messages"] if m["role"] == "system"]
    if wire == "openai":
        return [text_of(m["content"]) for m in body["messages"]
                if m["role"] in ("system", "developer")]
    si = body.get("systemInstruction") or {}
    return [p["text"] for p in si.get("parts") or [] if "text" in p]


def tool_names(body: dict, wire: str) -> list[str]:
    if wire == "anthropic":
        return sorted(t["name"] for t in body.get("tools") or [])
    if wire == "openai":
        return sorted(t["function"]["name"] for t in body.get("tools") or [])
    return sorted(d["name"] for t in body.get("tools") or []
                  for d in t.get("functionDeclarations") or [])


def tool_results(body: dict, wire: str) -> list[str]:
    """The tool results a request carries, as text."""
    if wire == "openai":
        return [text_of(m["content"]) for m in body["messages"] if m["role"] == "tool"]
    if wire == "anthropic":
        return [text_of(b.get("content")) for m in body["messages"] if m["role"] == "user"
                and isinstance(m["content"], list) for b in m["content"]
                if b.get("type") == "tool_result"]
    return [json.dumps(p["functionResponse"]) for c in body["contents"]
            for p in c.get("parts") or [] if "functionResponse" in p]


def normalised(texts: list[str], s: Session) -> str:
    """All system text as one string, with the session's own paths masked
    (Claude Code also names a directory after the working directory, every
    character but letters and digits made ``-``)."""
    joined = "\n".join(texts)
    for path, mask in ((s.workdir, "<work>"), (s.home, "<home>")):
        joined = joined.replace(str(path), mask)
        joined = joined.replace(re.sub(r"[^A-Za-z0-9]", "-", str(path)), mask)
    return joined


def generation(body: dict, wire: str) -> dict[str, Any]:
    """The generation settings that have an equivalent in every protocol."""
    if wire == "anthropic":
        thinking = body.get("thinking") or {}
        return {"max_tokens": body.get("max_tokens"), "temperature": body.get("temperature"),
                "thinks": thinking.get("type") in ("enabled", "adaptive")}
    if wire == "openai":
        return {"max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
                "temperature": body.get("temperature"),
                "thinks": body.get("reasoning_effort") not in (None, "none")}
    g = body.get("generationConfig") or {}
    tc = g.get("thinkingConfig") or {}
    return {"max_tokens": g.get("maxOutputTokens"), "temperature": g.get("temperature"),
            "thinks": bool(tc) and tc.get("thinkingBudget") != 0}


# ---- the tests ---------------------------------------------------------------


# What each upstream says to a prompt without a tool result.
PLAIN_LABEL = {"mock": "Mock answer to", "claude-custom": "claude says:",
               "openai-custom": "openai says:", "gemini-cli": "gemini says:"}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("agent", list(AGENTS))
def test_agent_answers_a_plain_prompt(sessions, agent, provider):
    """No file named: one request, answered in text, although the agent
    offers its file reader (the mocks must not guess a path)."""
    s = sessions(agent, provider, read=False)
    assert s.returncode == 0, s.describe()
    assert PLAIN_LABEL[provider] in s.answer, s.describe()
    if provider != "mock":  # the mock quotes the first words: Claude Code's context
        assert s.token in s.answer, s.describe()
    assert len(s.requests) == 1, [json.dumps(b)[:300] for b in s.requests]
    assert tool_results(s.requests[0], WIRE[provider]) == []


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("agent", list(AGENTS))
def test_agent_session_with_a_file_read(sessions, agent, provider):
    s = sessions(agent, provider)
    assert s.returncode == 0, s.describe()
    # The final answer is the upstream's, quoting the file the agent read.
    assert ANSWER_LABEL[provider] in s.answer, s.describe()
    assert s.token in s.answer, s.describe()
    wire = WIRE[provider]
    assert len(s.requests) == 2, [json.dumps(b)[:300] for b in s.requests]
    first, second = s.requests
    # The first request offered the reader; the second carries its result.
    reader = "Read" if agent == "claude-code" else "read_file"
    assert reader in tool_names(first, wire)
    assert tool_results(first, wire) == []
    results = tool_results(second, wire)
    assert len(results) == 1 and s.token in results[0], results

    # Nothing the agent sent with an equivalent is lost on the way.
    ref = sessions(agent, SAME_FAMILY[agent])
    assert ref.returncode == 0, ref.describe()
    ref_wire = WIRE[SAME_FAMILY[agent]]
    ref_first = ref.requests[0]
    assert normalised(system_texts(first, wire), s) == \
        normalised(system_texts(ref_first, ref_wire), ref)
    assert tool_names(first, wire) == tool_names(ref_first, ref_wire)
    got, want = generation(first, wire), generation(ref_first, ref_wire)
    assert got["thinks"] == want["thinks"], (got, want)
    assert got["temperature"] == want["temperature"], (got, want)
    if want["max_tokens"] is not None:  # else the target's own default
        assert got["max_tokens"] == want["max_tokens"], (got, want)


def test_claude_code_sends_the_current_messages_api(sessions):
    """What Claude Code sends, as claude-custom's upstream got it: the
    fields issue 17 names, passed through untouched."""
    s = sessions("claude-code", "claude-custom")
    assert s.returncode == 0, s.describe()
    first = s.requests[0]
    assert [m["role"] for m in first["messages"]].count("system") >= 1, first["messages"]
    assert first["thinking"]["type"] in ("adaptive", "enabled")
    for key in ("output_config", "context_management", "metadata"):
        assert key in first, sorted(first)
    assert "cache_control" in json.dumps(first["system"])
    assert {"Read", "Bash", "Edit"} <= set(tool_names(first, "anthropic"))
    read = next(t for t in first["tools"] if t["name"] == "Read")
    assert "file_path" in read["input_schema"]["properties"]


def test_claude_code_system_messages_keep_their_place(sessions):
    """Claude Code's system messages inside ``messages`` reach an OpenAI
    upstream as system messages at the same place."""
    ref = sessions("claude-code", "claude-custom").requests[0]
    s = sessions("claude-code", "openai-custom")
    assert s.returncode == 0, s.describe()
    sent = s.requests[0]
    want = [m["role"] for m in ref["messages"]]
    got = [m["role"] for m in sent["messages"]][1:]  # after the system prompt
    assert got == want, (got, want)
