"""The feature guide's WebSocket example (tests/fixtures/feature-guide-websocket.js,
copied verbatim from the guide's section 4) in headless Chromium, in a page
served on loopback.

The only change is the address: the guide's ``localhost:3000`` becomes the
test gateway's port. The gateway's key is the guide's ``your-api-key``, and
its openai-custom upstream is a second aiproxy serving the mock provider
with ``--mock-chunk-delay``, so the ``provider: 'openai-custom'`` request
of the example streams at a known pace.

As one script the example cannot work in any browser: it calls
``ws.send`` right after ``new WebSocket(...)``, while the socket is still
CONNECTING, which throws. A reader runs its second part (after
``// 发送请求``) once the first has logged "Connected"; so does the test,
and it also shows the one-script failure.

Needs /usr/bin/chromium (or CHROMIUM) and Playwright (requirements.txt).
"""

from __future__ import annotations

import functools
import http.server
import os
import tempfile
import threading
from pathlib import Path

import pytest

from support import REPO_ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXAMPLE = (REPO_ROOT / "tests" / "fixtures" / "feature-guide-websocket.js").read_text(encoding="utf-8")
SEND_MARK = "// 发送请求"
CHUNK_DELAY_MS = 120

# Records every console.log call of the page, with the time it was made;
# runs before the example, which it does not touch.
RECORDER = """
window.__log = [];
const __consoleLog = console.log;
console.log = function (...args) {
  window.__log.push({t: performance.now(), args: JSON.parse(JSON.stringify(args))});
  __consoleLog.apply(console, args);
};
"""


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python package `playwright` missing: pip install -r tests/python/requirements.txt")
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install -y chromium"
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield ctx
        ctx.close()


@pytest.fixture
def gateway(start_gateway):
    """The guide's gateway: key `your-api-key`, openai-custom in front of a
    slow mock."""
    upstream = start_gateway("--model-provider", "mock",
                             "--mock-chunk-delay", f"{CHUNK_DELAY_MS}ms")
    return start_gateway("--api-key", "your-api-key", "--model-provider", "openai-custom",
                         "--openai-api-key", "sk-chain", "--openai-base-url", f"{upstream.url}/v1")


class Site:
    """Serves pages from a directory on 127.0.0.1."""

    def __init__(self, root: Path):
        handler = functools.partial(Quiet, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def page_html(script: str) -> str:
    return ("<!doctype html><meta charset=utf-8><title>aiproxy WebSocket example</title>"
            f"<script>{RECORDER}</script><script>{script}</script>")


@pytest.fixture
def site(gateway, tmp_path):
    example = EXAMPLE.replace("localhost:3000", f"localhost:{gateway.port}")
    assert example.count(f"localhost:{gateway.port}") == 1
    connect, send = example.split(SEND_MARK)
    (tmp_path / "connect.html").write_text(page_html(connect), encoding="utf-8")
    (tmp_path / "whole.html").write_text(page_html(example), encoding="utf-8")
    s = Site(tmp_path)
    s.send_part = SEND_MARK + send
    yield s
    s.close()


def test_the_guide_example_streams_frames_one_by_one(browser, site):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.url + "/connect.html")
    page.wait_for_function("window.__log.some(e => e.args[0] === 'Connected to AI Proxy WebSocket')",
                           timeout=15000)
    page.add_script_tag(content=site.send_part)
    page.wait_for_function(
        "window.__log.some(e => e.args[0] === 'Received:' && e.args[1].type === 'stream_end')",
        timeout=30000)
    log = page.evaluate("window.__log")
    page.close()
    assert errors == []
    assert log[0]["args"] == ["Connected to AI Proxy WebSocket"]
    received = [(e["t"], e["args"][1]) for e in log[1:]]
    assert all(e["args"][0] == "Received:" for e in log[1:])
    kinds = [m["type"] for _, m in received]
    assert kinds[-1] == "stream_end" and set(kinds[:-1]) == {"stream"}, kinds
    assert all(m["id"] == "123" for _, m in received)
    streams = [(t, m["data"]) for t, m in received if m["type"] == "stream"]
    assert len(streams) >= 10
    text = "".join(c["delta"].get("content") or "" for _, d in streams for c in d["choices"])
    assert text.startswith('Mock answer to "Hello!":'), text
    # One frame per event, each as it came: spread at the upstream's pace,
    # not delivered together at the end.
    times = [t for t, _ in streams]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    assert gaps[len(gaps) // 2] > CHUNK_DELAY_MS * 0.5, gaps
    assert times[-1] - times[0] > CHUNK_DELAY_MS * (len(times) - 2) * 0.5, times


def test_as_one_script_the_example_sends_before_the_socket_is_open(browser, site):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.url + "/whole.html")
    page.wait_for_function("window.__log.length > 0", timeout=15000)
    page.close()
    assert any("CONNECTING" in e for e in errors), errors


def test_the_dashboard_shows_the_open_connection(browser, site, gateway):
    page = browser.new_page()
    page.goto(site.url + "/connect.html")
    page.wait_for_function("window.__log.some(e => e.args[0] === 'Connected to AI Proxy WebSocket')",
                           timeout=15000)
    dash = browser.new_page()
    dash.goto(gateway.url + "/dashboard")
    count = "document.getElementById('ws-connections').textContent"
    dash.wait_for_function(f"{count} === '1'", timeout=15000)
    assert dash.locator("#ws-card").is_visible()
    page.close()
    dash.wait_for_function(f"{count} === '0'", timeout=15000)
    dash.close()
