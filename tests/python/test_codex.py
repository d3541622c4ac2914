"""The real Codex CLI (``@openai/codex``, pinned in tests/agents/codex/,
installed by tests/run.sh) driven headless through aiproxy.

Each run is ``codex exec --skip-git-repo-check PROMPT`` with a throwaway
``HOME``/``CODEX_HOME`` whose config.toml names aiproxy as the model
provider (``wire_api = "responses"``, the key from an environment
variable, analytics, OpenTelemetry, feedback and update checks off), in a
temporary working directory holding one file. Codex speaks only the
Responses API, and every request it makes offers its tools (the shell tool
``exec_command`` first, a ``namespace`` of sub-agent tools, ``web_search``).

* built-in mock: the mock asks Codex's shell tool to ``cat`` the file the
  prompt names, Codex runs it and sends the output back, and the mock's
  answer quoting it is Codex's final message (exit status 0, two requests
  logged by the gateway);
* openai-custom, claude-custom, gemini-cli mock upstreams: the upstream
  asks Codex's shell tool to ``cat`` the file, Codex runs it, the next
  request carries the file's content as the tool result in the upstream's
  own shape, and the upstream's answer quoting it is Codex's final message.
  The first request is checked for what must not be lost on the way:
  Codex's instructions as the system prompt (no system-role message left
  among the turns), the prompt, and the tools, namespaced ones flattened.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from support import API_KEY, REPO_ROOT, claude_system_text, claude_text, openai_text

pytestmark = pytest.mark.timeout(240)

CODEX = REPO_ROOT / "tests" / "agents" / "codex" / "node_modules" / ".bin" / "codex"
SECRET = "the launch code is 4711-ALPHA"
FILE = "secret.txt"
PROMPT = f"Read {FILE} and tell me what it says."
LABEL = {"openai-custom": "openai", "claude-custom": "claude", "gemini-cli": "gemini"}
# Tools Codex 0.171 offers on every turn; spawn_agent comes from its
# multi_agent_v1 namespace, which aiproxy flattens into plain functions.
CODEX_TOOLS = {"exec_command", "write_stdin", "view_image", "spawn_agent", "wait_agent"}

CONFIG = """\
model = "gpt-5-codex"
model_provider = "aiproxy"
approval_policy = "never"
sandbox_mode = "workspace-write"
check_for_update_on_startup = false

[model_providers.aiproxy]
name = "aiproxy"
base_url = "{base_url}"
env_key = "AIPROXY_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[otel]
exporter = "none"

[feedback]
enabled = false
"""


def run_codex(tmp_path: Path, base_url: str, prompt: str = PROMPT) -> subprocess.CompletedProcess:
    if not CODEX.exists():
        pytest.fail(f"Codex CLI not installed at {CODEX}: run tests/run.sh "
                    "(or `npm ci --prefix tests/agents/codex`)")
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CONFIG.format(base_url=base_url))
    work = tmp_path / "work"
    work.mkdir()
    (work / FILE).write_text(SECRET + "\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "CODEX_HOME": str(home / ".codex"), "AIPROXY_API_KEY": API_KEY,
           "LANG": "C.UTF-8", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(CODEX), "exec", "--strict-config", "--skip-git-repo-check", prompt],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=180)
    assert proc.returncode == 0, (
        f"codex exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def responses_log_lines(gw, provider: str) -> list[str]:
    return [ln for ln in gw.stderr().splitlines()
            if "route=/v1/responses" in ln and f"provider={provider}" in ln]


def test_codex_with_builtin_mock(gw, upstreams, tmp_path):
    before = len(responses_log_lines(gw, "mock"))
    path = tmp_path / "work" / FILE
    proc = run_codex(tmp_path, f"{gw.url}/mock/v1", f"Read {path} and tell me what it says.")
    # The mock asked Codex's shell to `cat` the file the prompt names; Codex
    # ran it and sent the output back; the mock's answer quotes it.
    assert f"cat {path}" in proc.stderr, proc.stderr
    assert SECRET in proc.stdout, proc.stdout
    lines = responses_log_lines(gw, "mock")[before:]
    assert len(lines) == 2 and all("status=200" in ln for ln in lines), lines
    assert upstreams.openai.requests == [] and upstreams.claude.requests == []


def first_turn(provider: str, body: dict) -> tuple[str, str, set[str]]:
    """(system prompt, last user text, tool names) of an upstream request."""
    if provider == "openai-custom":
        msgs = body["messages"]
        assert msgs[0]["role"] == "system"
        assert all(m["role"] != "system" for m in msgs[1:]), "a system message among turns"
        return (openai_text(msgs[0]["content"]), openai_text(msgs[-1]["content"]),
                {t["function"]["name"] for t in body["tools"]})
    if provider == "claude-custom":
        msgs = body["messages"]
        assert all(m["role"] in ("user", "assistant") for m in msgs)
        return (claude_system_text(body), claude_text(msgs[-1]["content"]),
                {t["name"] for t in body["tools"]})
    req = body["request"]
    return ("\n".join(p["text"] for p in req["systemInstruction"]["parts"]),
            "\n".join(p.get("text", "") for p in req["contents"][-1]["parts"]),
            {d["name"] for t in req["tools"] for d in t.get("functionDeclarations", [])})


def tool_round_trip(provider: str, body: dict) -> tuple[str, dict, str]:
    """(tool name, arguments, result text) of the call the last request answers."""
    if provider == "openai-custom":
        msgs = body["messages"]
        call = msgs[-2]["tool_calls"][0]
        assert msgs[-1]["role"] == "tool" and msgs[-1]["tool_call_id"] == call["id"]
        return (call["function"]["name"], json.loads(call["function"]["arguments"]),
                openai_text(msgs[-1]["content"]))
    if provider == "claude-custom":
        msgs = body["messages"]
        use = next(b for b in msgs[-2]["content"] if b["type"] == "tool_use")
        result = next(b for b in msgs[-1]["content"] if b["type"] == "tool_result")
        assert result["tool_use_id"] == use["id"]
        content = result["content"]
        return use["name"], use["input"], content if isinstance(content, str) else claude_text(content)
    contents = body["request"]["contents"]
    call = next(p["functionCall"] for p in contents[-2]["parts"] if "functionCall" in p)
    answer = next(p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p)
    assert answer["name"] == call["name"]
    return call["name"], call["args"], json.dumps(answer["response"])


@pytest.mark.parametrize("provider", ["openai-custom", "claude-custom", "gemini-cli"])
def test_codex_reads_a_file_through_each_provider(gw, upstreams, gemini_cli, tmp_path, provider):
    if provider == "gemini-cli":
        base, up, gens = gemini_cli.gw.url, gemini_cli.up, gemini_cli.up.generations
    else:
        up = upstreams.for_provider(provider)
        path = "/v1/messages" if provider == "claude-custom" else "/v1/chat/completions"
        base, gens = gw.url, (lambda: up.requests_to(path))
    up.tool_args["exec_command"] = {"cmd": f"cat {FILE}"}
    proc = run_codex(tmp_path, f"{base}/{provider}/v1")

    requests = gens()
    assert len(requests) == 2, [r.path for r in requests]
    system, prompt, tools = first_turn(provider, requests[0].body)
    assert "Codex" in system, system[:300]
    assert PROMPT in prompt, prompt[-300:]
    assert CODEX_TOOLS <= tools, sorted(tools)
    assert "web_search" not in tools
    name, args, result = tool_round_trip(provider, requests[1].body)
    assert (name, args) == ("exec_command", {"cmd": f"cat {FILE}"})
    assert SECRET in result, result
    # Codex's final message is the upstream's answer to the tool result.
    final = proc.stdout.strip()
    assert final.startswith(f"{LABEL[provider]} tool result:"), proc.stdout
    assert SECRET in final
    assert re.search(r"exited 0|succeeded", proc.stderr), proc.stderr
