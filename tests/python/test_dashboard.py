"""The live dashboard in headless Chromium (Debian `chromium`, driven by
Playwright's Python package with the system browser).

Needs the integrated binary (target/release/aiproxy, or AIPROXY_BIN),
/usr/bin/chromium (or CHROMIUM), and the packages in
requirements-observability.txt. Saves tests/output/dashboard.png.
"""
import itertools
import json
import os
import re
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiproxy_proc import ROOT, Aiproxy, http_get, http_post  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root, on a machine with no outside network (see the rust machine notes).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = os.path.join(ROOT, "tests", "output", "dashboard.png")
CHAT = "/v1/chat/completions"


_sent = itertools.count()


def traffic(proxy, n, stream=False):
    """n requests the mock provider must answer: every prompt is new, so
    none of them is a cache hit (hits never reach a provider)."""
    for _ in range(n):
        body = {"model": "mock-model", "messages": [{"role": "user", "content": f"dash {next(_sent)}"}]}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        status, _, _ = http_post(proxy.url + CHAT, body)
        assert status == 200


@pytest.fixture(scope="module")
def proxy():
    with Aiproxy() as p:
        yield p


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python package `playwright` missing: pip install -r tests/python/requirements-observability.txt")
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install -y chromium"
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1440, "height": 1000})
        yield ctx
        ctx.close()


def test_page_and_summary_are_served_without_auth(proxy):
    status, headers, body = http_get(proxy.url + "/dashboard")
    assert status == 200
    assert headers.get("Content-Type", "").startswith("text/html")
    page = body.decode()
    assert "summary.json" in page
    assert not re.search(r"""(src=|href=["']?https?:|url\(https?:|@import)""", page), "external asset"
    status, headers, body = http_get(proxy.url + "/dashboard/summary.json")
    assert status == 200
    assert headers.get("Content-Type", "").startswith("application/json")
    s = json.loads(body)
    for key in ["requests", "latency", "providers", "tokens", "cache", "history"]:
        assert key in s


def wait_polls(page, more_than):
    page.wait_for_function(f"Number(document.body.dataset.polls) > {more_than}", timeout=15000)
    return int(page.evaluate("document.body.dataset.polls"))


def provider_cell(page, cls):
    return page.locator(f'tr[data-provider="mock"] td.{cls}').inner_text()


def test_dashboard_shows_live_numbers(proxy, browser):
    traffic(proxy, 6)
    traffic(proxy, 2, stream=True)
    summary = json.loads(http_get(proxy.url + "/dashboard/summary.json")[2])
    mock = [p for p in summary["providers"] if p["provider"] == "mock"][0]
    known = mock["requests"]
    assert known == 8

    errors = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(proxy.url + "/dashboard")
    polls = wait_polls(page, 0)

    assert page.locator("#status-text").inner_text().startswith("live")
    assert provider_cell(page, "requests") == str(known)
    assert page.locator("#rps").inner_text() != "—"
    for q in ["#p50", "#p95", "#p99"]:
        assert re.match(r"^[\d.]+ (ms|s|min)$", page.locator(q).inner_text()), q
    assert re.match(r"^\d", page.locator("#tokens-total").inner_text())
    assert page.locator("#active").inner_text().isdigit()
    assert page.locator("#cache-hit-ratio").inner_text()
    assert page.locator("#chart-traffic svg path").count() > 0

    traffic(proxy, 5)
    page.wait_for_function(
        f"""() => {{ const c = document.querySelector('tr[data-provider="mock"] td.requests');
                    return c && c.textContent === '{known + 5}'; }}""", timeout=15000)
    assert wait_polls(page, polls) > polls
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    # Let a few more samples reach the charts before the picture.
    wait_polls(page, polls + 2)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert os.path.getsize(SCREENSHOT) > 10_000
    assert errors == [], errors
    page.close()
