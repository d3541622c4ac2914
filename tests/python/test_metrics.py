"""End-to-end tests of GET /metrics on a running aiproxy (mock provider).

They need the integrated binary (target/release/aiproxy, or AIPROXY_BIN),
promtool and prometheus (Debian package `prometheus`), and the Python
packages in requirements-observability.txt (prometheus-client, openai, pytest).
"""
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiproxy_proc import Aiproxy, free_port, http_get, http_post  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as openmetrics_families,
)

CHAT = "/v1/chat/completions"

# Sample names every exposition must contain (histograms through _count).
REQUIRED = [
    "aiproxy_build_info",
    "aiproxy_http_requests_total",
    "aiproxy_http_request_duration_seconds_count",
    "aiproxy_http_active_requests",
    "aiproxy_provider_requests_total",
    "aiproxy_provider_errors_total",
    "aiproxy_provider_tokens_used_total",
    "aiproxy_provider_request_duration_seconds_count",
    "aiproxy_provider_time_to_first_token_seconds_count",
    "aiproxy_cache_hits_total",
    "aiproxy_cache_misses_total",
    "aiproxy_cache_size_bytes",
]
# Family names as declared in `# TYPE` lines of the 0.0.4 format.
REQUIRED_TYPES = [
    "aiproxy_build_info",
    "aiproxy_http_requests_total",
    "aiproxy_http_request_duration_seconds",
    "aiproxy_http_active_requests",
    "aiproxy_provider_requests_total",
    "aiproxy_provider_errors_total",
    "aiproxy_provider_tokens_used_total",
    "aiproxy_provider_request_duration_seconds",
    "aiproxy_provider_time_to_first_token_seconds",
    "aiproxy_cache_hits_total",
    "aiproxy_cache_misses_total",
    "aiproxy_cache_size_bytes",
]


def need(tool):
    path = shutil.which(tool)
    assert path, f"{tool} not found: apt-get install -y --no-install-recommends prometheus"
    return path


def samples(text):
    """[(name, labels dict, value)] via the official parser."""
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


def value(text, name, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples(text)
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


def series(text, name):
    return [l for n, l, _ in samples(text) if n == name]


@pytest.fixture(scope="module")
def proxy():
    with Aiproxy() as p:
        yield p


def chat(client, stream, model="mock-model", text="hello"):
    """One chat completion through the official SDK; returns (prompt, completion) usage."""
    if not stream:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
        assert r.choices[0].message.content
        return r.usage.prompt_tokens, r.usage.completion_tokens
    usage = None
    content = ""
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}],
            stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert content, "stream carried no text"
    assert usage is not None, "stream carried no usage despite include_usage"
    return usage.prompt_tokens, usage.completion_tokens


def test_exposition_parses_with_the_official_parser_and_names_are_present(proxy):
    chat(proxy.openai(), stream=False)
    ctype, text = proxy.metrics_text()
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# EOF" not in text
    names = {n for n, _, _ in samples(text)}
    for name in REQUIRED:
        assert name in names, f"{name} missing"
    for name in REQUIRED_TYPES:
        assert f"# TYPE {name} " in text, f"# TYPE {name} missing"


def test_openmetrics_is_served_when_asked_for(proxy):
    ctype, text = proxy.metrics_text(
        accept="application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype
    assert text.endswith("# EOF\n")
    fams = {f.name for f in openmetrics_families(text)}
    for name in ["aiproxy_http_requests", "aiproxy_http_request_duration_seconds",
                 "aiproxy_provider_tokens_used", "aiproxy_cache_size_bytes", "aiproxy_build"]:
        assert name in fams, f"{name} missing from {sorted(fams)}"


def test_promtool_check_metrics_passes(proxy):
    promtool = need("promtool")
    chat(proxy.openai(), stream=True)
    _, text = proxy.metrics_text()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_counters_and_histograms_move_by_known_traffic(proxy):
    client = proxy.openai()
    _, before = proxy.metrics_text()
    plain, streamed = 5, 3
    prompt = completion = 0
    for i in range(plain):
        p, c = chat(client, stream=False, text=f"plain {i}")
        prompt += p
        completion += c
    for i in range(streamed):
        p, c = chat(client, stream=True, text=f"streamed {i}")
        prompt += p
        completion += c
    # Errors the gateway answers itself: 404 and 400.
    assert http_get(proxy.url + "/no/such/path")[0] == 404
    assert http_post(proxy.url + CHAT, b"{not json")[0] == 400
    _, after = proxy.metrics_text()

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    n = plain + streamed
    assert delta("aiproxy_http_requests_total", route=CHAT, method="POST", status="200") == n
    assert delta("aiproxy_http_requests_total", route=CHAT, method="POST", status="400") == 1
    assert delta("aiproxy_http_requests_total", status="404") == 1
    assert delta("aiproxy_http_request_duration_seconds_count", route=CHAT, method="POST") == n + 1
    assert delta("aiproxy_http_request_duration_seconds_bucket", route=CHAT, method="POST", le="+Inf") == n + 1
    assert delta("aiproxy_http_request_duration_seconds_sum", route=CHAT, method="POST") > 0
    assert delta("aiproxy_provider_requests_total", provider="mock") == n
    assert delta("aiproxy_provider_request_duration_seconds_count", provider="mock") == n
    assert delta("aiproxy_provider_time_to_first_token_seconds_count", provider="mock") == streamed
    assert delta("aiproxy_provider_tokens_used_total", provider="mock", type="prompt") == prompt
    assert delta("aiproxy_provider_tokens_used_total", provider="mock", type="completion") == completion
    assert delta("aiproxy_provider_errors_total", provider="mock") == 0
    assert value(after, "aiproxy_http_active_requests") >= 0


def test_metrics_port_serves_the_same_exposition():
    mport = free_port()
    with Aiproxy(metrics_port=mport) as p:
        chat(p.openai(), stream=False)
        _, main = p.metrics_text()
        _, extra = p.metrics_text(base=f"http://127.0.0.1:{mport}")
        names = lambda t: {n for n, _, _ in samples(t)}  # noqa: E731
        assert names(main) == names(extra)
        assert value(extra, "aiproxy_provider_requests_total", provider="mock") == 1
        for n in REQUIRED:
            assert n in names(extra)
        # The extra listener serves /metrics only.
        assert http_get(f"http://127.0.0.1:{mport}/v1/models")[0] == 404
        assert http_get(f"http://127.0.0.1:{mport}/dashboard")[0] == 404


def test_random_paths_and_models_keep_series_bounded():
    rnd = random.Random(5)
    word = lambda k: "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(k))  # noqa: E731
    with Aiproxy() as p:
        for _ in range(1000):
            path = "/" + "/".join(word(rnd.randint(1, 12)) for _ in range(rnd.randint(1, 4)))
            http_get(p.url + urllib.parse.quote(path))
        models = [f"m-{word(16)}" for _ in range(1000)]
        for m in models:
            status, _, body = http_post(p.url + CHAT, {"model": m, "messages": [{"role": "user", "content": "x"}]})
            assert status == 200, body[:200]
        _, text = p.metrics_text()
    http = series(text, "aiproxy_http_requests_total")
    # A handful of route templates, methods and statuses, whatever the paths.
    assert len(http) <= 30, http
    assert len({l["route"] for l in http}) <= 10, {l["route"] for l in http}
    prov = series(text, "aiproxy_provider_requests_total")
    assert len(prov) <= 101, len(prov)
    assert value(text, "aiproxy_provider_requests_total", model="other") >= 900
    assert value(text, "aiproxy_provider_requests_total", provider="mock") == 1000
    tokens = series(text, "aiproxy_provider_tokens_used_total")
    assert len(tokens) <= 2 * 101
    total_series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    assert total_series < 2000, total_series


def test_real_prometheus_scrapes_and_counts():
    prometheus = need("prometheus")
    with Aiproxy() as p, tempfile.TemporaryDirectory() as tmp:
        k = 7
        client = p.openai()
        for i in range(k):
            chat(client, stream=(i % 2 == 0), text=f"scrape {i}")
        pport = free_port()
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: aiproxy
    static_configs: [{{targets: ["127.0.0.1:{p.port}"]}}]
""")
        log = open(os.path.join(tmp, "prom.log"), "wb")
        prom = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{pport}"], stdout=log, stderr=log)
        try:
            query = f'sum(aiproxy_http_requests_total{{route="{CHAT}",status="200"}})'
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            got = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    status, _, body = http_get(url, timeout=2)
                    if status == 200:
                        import json
                        res = json.loads(body)["data"]["result"]
                        if res:
                            got = float(res[0]["value"][1])
                            if got == k:
                                break
                except OSError:
                    pass
                time.sleep(0.5)
            assert got == k, f"Prometheus saw {got}, expected {k}"
            status, _, body = http_get(f"http://127.0.0.1:{pport}/api/v1/targets")
            assert b'"health":"up"' in body, body[:500]
        finally:
            prom.terminate()
            prom.wait(timeout=20)
            log.close()
