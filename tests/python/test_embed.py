"""aiproxy as a library, seen from the official SDKs: examples/embed.rs
embeds the gateway with a provider of its own (``Shout``) behind
openai-custom, and the OpenAI and Anthropic SDKs talk to it.

The example is built by ``cargo test`` beside the binary
(``target/<profile>/examples/embed``, next to ``$AIPROXY_BIN``).
tests/embed.rs covers the embedding API with raw HTTP in-process.
"""

from __future__ import annotations

import signal
import subprocess
import time

import anthropic
import openai
import pytest

from support import OUTPUT_DIR, binary_path, free_port, gateway_environment

pytestmark = pytest.mark.timeout(60)

KEY = "sk-embed-example"


def example_path():
    """The example beside the binary under test, or the one tests/run.sh's
    `cargo test --profile release-test` built next to it."""
    target = binary_path().parent
    candidates = [target / "examples" / "embed",
                  target.parent / "release-test" / "examples" / "embed"]
    for path in candidates:
        if path.exists():
            return path
    pytest.fail(f"{candidates[0]} not built: `cargo test` (or `cargo build --examples`) builds it")


@pytest.fixture(scope="module")
def embedded():
    port = free_port()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    log = open(OUTPUT_DIR / "embed-example.stderr.log", "wb")
    proc = subprocess.Popen([str(example_path()), str(port), KEY], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, env=gateway_environment(),
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=5)
        while True:
            assert proc.poll() is None, f"embed exited with {proc.returncode}"
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "embed did not answer within 15 s"
                time.sleep(0.05)  # readiness poll interval
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
    assert proc.returncode == 0, f"embed exited with {proc.returncode} after SIGTERM"


def test_openai_sdk_reaches_the_custom_provider(embedded):
    url, _ = embedded
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["shout-1"]
    r = client.chat.completions.create(
        model="shout-1", messages=[{"role": "user", "content": "hello from openai"}])
    assert r.choices[0].message.content == "openai-custom-0 says: HELLO FROM OPENAI"
    assert r.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(
        model="shout-1", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        pieces += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(pieces) == "openai-custom-0 says: STREAM ME PLEASE"
    assert usage is not None and usage.completion_tokens == 5  # its words

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_anthropic_sdk_reaches_it_through_the_converters(embedded):
    url, _ = embedded
    client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=30)
    m = client.messages.create(model="shout-1", max_tokens=100,
                               messages=[{"role": "user", "content": "hi from claude"}])
    assert m.content[0].text == "openai-custom-0 says: HI FROM CLAUDE"
    assert m.stop_reason == "end_turn"
    with client.messages.stream(model="shout-1", max_tokens=100,
                                messages=[{"role": "user", "content": "claude streams"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "openai-custom-0 says: CLAUDE STREAMS"
    assert final.stop_reason == "end_turn"


def test_sighup_reloads_and_keeps_serving(embedded):
    url, proc = embedded
    proc.send_signal(signal.SIGHUP)
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    log = OUTPUT_DIR / "embed-example.stderr.log"
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "no reload logged within 10 s"
        time.sleep(0.05)  # waiting for the log line, polled
    text = log.read_text(errors="replace")
    assert "instances kept with their state: [openai-custom-0]" in text, text
    r = client.chat.completions.create(
        model="shout-1", messages=[{"role": "user", "content": "after the reload"}])
    assert r.choices[0].message.content == "openai-custom-0 says: AFTER THE RELOAD"
    assert proc.poll() is None
