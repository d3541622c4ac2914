"""The aiproxy process: signals, exit codes and logs.

* SIGTERM while a slow stream is in flight (``--mock-chunk-delay 200ms``):
  the gateway stops answering as healthy / accepting, the stream still
  finishes completely (same text as the unary answer, finish_reason stop)
  and the process exits 0. SIGINT on an idle gateway also exits 0.
* Usage and configuration errors exit 2 with a message on stderr.
* Secrets: with unique canary strings as the client key, both upstream keys
  and a wrong key, after successes, streams, model lists, auth failures
  (all four ways) and upstream errors, no canary appears anywhere in
  stderr — in text or JSON log format, at debug level.
* ``--log-format json``: every stderr line is a JSON object; access lines
  carry method, route, status and duration; startup warnings (an unknown
  ``AIPROXY_*`` variable) are JSON lines too.
"""

import json
import signal
import subprocess
import time
import uuid

import anthropic
import openai
import pytest

from mock_upstreams import AnthropicUpstream, OpenAIUpstream
from support import (
    anthropic_client,
    binary_path,
    gateway_environment,
    gemini_client,
    openai_client,
)

pytestmark = pytest.mark.timeout(60)


def say(text):
    return [{"role": "user", "content": text}]


def test_sigterm_lets_a_slow_stream_finish(start_gateway):
    g = start_gateway("--model-provider", "mock", "--mock-chunk-delay", "200ms",
                      "--shutdown-timeout", "30s")
    client = openai_client(g, key="no-auth-configured")
    prompt = "Please write a long answer about rivers and mountains"
    expected = client.chat.completions.create(model="m", messages=say(prompt))
    expected_text = expected.choices[0].message.content
    words = len(expected_text.split())
    assert words >= 10, "the mock answer is long enough to stream for seconds"

    stream = iter(client.chat.completions.create(model="m", messages=say(prompt), stream=True))
    parts, finish = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            break
    t_signal = time.monotonic()
    g.send_signal(signal.SIGTERM)

    # Draining: within a bounded time, /health stops saying 200 (503 or refused).
    deadline = time.monotonic() + 3
    drained = False
    while time.monotonic() < deadline and not drained:
        try:
            drained = g.request("GET", "/health", timeout=2).status == 503
        except OSError:
            drained = True
        if not drained:
            time.sleep(0.05)  # bounded poll of an asynchronous state change
    assert drained, "still healthy after SIGTERM"

    after = 0
    for chunk in stream:
        after += 1
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    elapsed = time.monotonic() - t_signal
    assert "".join(parts) == expected_text
    assert finish == "stop"
    # Each chunk after the signal still came at the configured pace: the
    # stream was drained, not flushed or cut.
    assert after >= 5 and elapsed >= 0.2 * (after - 2), (after, elapsed)
    assert g.stop(timeout=30) == 0
    assert g.proc.returncode == 0


def test_sigint_exits_zero(start_gateway):
    g = start_gateway("--model-provider", "mock")
    assert g.request("GET", "/health").status == 200
    assert g.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("args, needle", [
    (["--no-such-flag"], "no-such-flag"),
    (["--model-provider", "bogus-provider"], "bogus-provider"),
    (["--port", "not-a-port"], "not-a-port"),
    (["--model-provider", "openai-custom"], "openai"),  # no --openai-api-key
])
def test_usage_and_config_errors_exit_2(args, needle):
    p = subprocess.run([str(binary_path()), "--host", "127.0.0.1", "--port", "0", *args],
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
                       env=gateway_environment())
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert needle in p.stderr.lower()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secrets_in_logs(start_gateway, log_format):
    canary = uuid.uuid4().hex
    client_key = f"ck-{canary}"
    wrong_key = f"wk-{canary}"
    openai_key = f"ok-{canary}"
    claude_key = f"ak-{canary}"
    up_openai = OpenAIUpstream(openai_key)
    up_claude = AnthropicUpstream(claude_key)
    try:
        g = start_gateway(
            "--api-key", client_key, "--model-provider", "mock,openai-custom,claude-custom",
            "--openai-api-key", openai_key, "--openai-base-url", f"{up_openai.root}/v1",
            "--claude-api-key", claude_key, "--claude-base-url", up_claude.root,
            "--log-level", "debug", "--log-format", log_format, "--request-base-delay", "10ms")
        # Successes, streams and model lists through every provider.
        for provider in ("mock", "openai-custom", "claude-custom"):
            oa = openai_client(g, provider, key=client_key)
            oa.chat.completions.create(model="m", messages=say("hello"))
            list(oa.chat.completions.create(model="m", messages=say("hello"), stream=True))
            oa.models.list()
            with anthropic_client(g, provider, key=client_key).messages.stream(
                    model="m", max_tokens=20, messages=say("hello")) as s:
                s.get_final_message()
            gemini_client(g, provider, key=client_key).models.generate_content(
                model="gemini-2.5-flash", contents="hello")
        assert g.request("GET", f"/v1beta/models?key={client_key}").status == 200
        # Auth failures, all four ways.
        responses = [
            g.request("GET", "/v1/models", headers={"Authorization": f"Bearer {wrong_key}"}),
            g.request("GET", "/v1/models", headers={"x-api-key": wrong_key}),
            g.request("GET", "/v1beta/models", headers={"x-goog-api-key": wrong_key}),
            g.request("GET", f"/v1beta/models?key={wrong_key}"),
            g.request("POST", f"/v1/chat/completions?key={wrong_key}", body={"model": "m"}),
        ]
        assert [r.status for r in responses] == [401] * 5
        for r in responses:
            assert canary not in r.text, "a response echoes the presented key"
        # Upstream errors (the upstreams fail, rate-limit, reject). The
        # rejection comes last: a rejected key takes its instance out of
        # service, so nothing after it would reach that upstream.
        up_openai.fail_next(500, times=None)
        with pytest.raises(anthropic.APIStatusError):
            anthropic_client(g, "openai-custom", key=client_key).messages.create(
                model="m", max_tokens=5, messages=say("x"))
        up_claude.fail_next(429, headers={"Retry-After": "60"}, times=None)
        with pytest.raises(anthropic.APIStatusError):
            anthropic_client(g, "claude-custom", key=client_key).messages.create(
                model="m", max_tokens=5, messages=say("x"))
        up_openai.reset()
        up_openai.fail_next(401, times=None)
        with pytest.raises(openai.APIStatusError):
            openai_client(g, "openai-custom", key=client_key).chat.completions.create(
                model="m", messages=say("x"))
        assert g.stop() == 0
        log = g.stderr()
        assert log.count("\n") >= 20, "expected an access log line per request"
        for secret in (canary, client_key, wrong_key, openai_key, claude_key):
            assert secret not in log, f"secret {secret[:3]}… found in stderr"
        assert canary[:16] not in log
        # The upstreams did get their keys: the canaries were really in use.
        assert up_openai.requests and up_claude.requests
    finally:
        up_openai.close()
        up_claude.close()


def test_json_log_lines(start_gateway):
    g = start_gateway("--model-provider", "mock", "--api-key", "json-log-key",
                      "--log-format", "json", "--log-level", "info")
    client = openai_client(g, key="json-log-key")
    client.chat.completions.create(model="m", messages=say("hello"))
    list(client.chat.completions.create(model="m", messages=say("hello"), stream=True))
    assert g.request("GET", "/v1/models").status == 401
    assert g.request("GET", "/nowhere").status == 404
    assert g.stop() == 0
    lines = [line for line in g.stderr().splitlines() if line.strip()]
    assert lines
    objs = []
    for line in lines:
        obj = json.loads(line)  # every line is JSON
        assert isinstance(obj, dict)
        objs.append(obj)
    access = [o for o in objs if "status" in o and "method" in o]
    assert len(access) >= 4, objs
    for o in access:
        assert isinstance(o["method"], str) and o["method"] in ("GET", "POST")
        assert isinstance(o["route"], str) and o["route"]
        assert isinstance(o["status"], int)
        assert isinstance(o["duration"], (int, float)) and o["duration"] >= 0
    statuses = {o["status"] for o in access}
    assert {200, 401, 404} <= statuses
    chat = [o for o in access if o["status"] == 200 and o["method"] == "POST"]
    assert chat and all(o["route"] == "/v1/chat/completions" for o in chat)


def test_json_log_format_covers_startup_warnings(start_gateway):
    g = start_gateway("--model-provider", "mock", "--log-format", "json",
                      env={"AIPROXY_NO_SUCH_SETTING": "1"})
    assert g.stop() == 0
    lines = [line for line in g.stderr().splitlines() if line.strip()]
    warned = [line for line in lines if "AIPROXY_NO_SUCH_SETTING" in line]
    assert warned, "an unknown AIPROXY_ variable is reported"
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"--log-format json printed a non-JSON line: {line!r}")
        assert isinstance(obj, dict)
