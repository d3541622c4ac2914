"""The HA drill: the compose stack of packaging/compose/ run for real on
loopback (see ha_stack.py) and driven through nginx with the official SDKs.

Redis, two aiproxy nodes clustered over UDP with the Redis cache tier,
nginx with the shipped nginx.conf and Prometheus with the shipped
prometheus.yml and alert rules. In order:

* an answer cached through node 1 is a hit through node 2 (Redis), and
  through nginx whichever node answers;
* DELETE /cache/clear on node 2 empties node 1's memory tier (cluster);
* a WebSocket stream through nginx;
* node 1 killed with SIGKILL under load: no request through nginx fails
  (proxy_next_upstream), node 2 declares node 1 dead within 11 s,
  Prometheus shows the target down and AiproxyDown and
  AiproxyClusterNodeDown pending; node 1 restarted is alive again and
  nginx sends it traffic again;
* SIGTERM to the node serving a stream: the stream finishes whole, the
  requests sent meanwhile are answered by the other node, and the drained
  node exits 0.

The measured figures (failed requests, time to dead, failovers) are
printed and written to tests/output/ha-drill/report.txt.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import anthropic
import openai
import pytest

from ha_stack import (
    API_KEY,
    LOG_DIR,
    Nginx,
    Node,
    Prometheus,
    Redis,
    WebSocket,
    wait_until,
)
from support import free_port

pytestmark = pytest.mark.timeout(120)

# Long enough streams to signal a node mid-way (16 text chunks), and a
# little latency so that requests are in flight when a node is killed.
NODE_SETTINGS = {
    "AIPROXY_MOCK_CHUNK_DELAY": "250ms",
    "AIPROXY_MOCK_LATENCY": "20ms",
    "AIPROXY_LOG_LEVEL": "info",
}
MODEL = "mock-small"


@dataclass
class Stack:
    redis: Redis
    node1: Node
    node2: Node
    nginx: Nginx
    prometheus: Prometheus

    def nodes(self) -> tuple[Node, Node]:
        return self.node1, self.node2


def report(line: str) -> None:
    print(line)
    with open(LOG_DIR / "report.txt", "a") as f:
        f.write(line + "\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("ha-drill")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*"):
        old.unlink()
    started = []
    try:
        redis = Redis(work).start()
        started.append(redis)
        p1, p2 = free_port(), free_port()
        hosts = {"redis:6379": f"127.0.0.1:{redis.port}",
                 "aiproxy1:3000": f"127.0.0.1:{p1}", "aiproxy2:3000": f"127.0.0.1:{p2}"}
        node1 = Node("aiproxy1", p1, hosts, NODE_SETTINGS)
        started.append(node1.start())
        node2 = Node("aiproxy2", p2, hosts, NODE_SETTINGS)
        started.append(node2.start())
        (work / "nginx").mkdir()
        nginx = Nginx(work / "nginx", {k: v for k, v in hosts.items() if k.startswith("aiproxy")})
        started.append(nginx.start())
        (work / "prometheus").mkdir()
        prometheus = Prometheus(work / "prometheus",
                                {k: v for k, v in hosts.items() if k.startswith("aiproxy")})
        started.append(prometheus.start())
        yield Stack(redis, node1, node2, nginx, prometheus)
    finally:
        for process in reversed(started):
            process.stop()


def sdk_openai(url: str) -> openai.OpenAI:
    # No SDK retries: every failure nginx lets through is counted.
    return openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)


def sdk_anthropic(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0, timeout=30)


def chat(url: str, prompt: str, **kw):
    return sdk_openai(url).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **kw)


def expected_text(node: Node, prompt: str) -> str:
    """The mock's whole answer to ``prompt``, asked of ``node`` directly."""
    r = chat(node.url, prompt, extra_headers={"Cache-Control": "no-cache"})
    return r.parse().choices[0].message.content


def all_alive(a: Node, b: Node) -> bool:
    return a.member_state(b.node_id) == "alive" and b.member_state(a.node_id) == "alive"


def test_the_stack_comes_up_clustered_and_scraped(stack):
    n1, n2 = stack.nodes()
    assert (n1.node_id, n2.node_id) == ("node1", "node2")
    wait_until("both nodes see each other alive", 10, lambda: all_alive(n1, n2))
    for node in (n1, n2):
        redis = node.get_json("/cache/stats")["redis"]
        assert redis["configured"] and redis["connected"], redis
    wait_until("Prometheus scrapes both nodes", 15,
               lambda: stack.prometheus.target_health() == {n1.addr: "up", n2.addr: "up"})
    rules = stack.prometheus.rule_names()
    assert {"AiproxyDown", "AiproxyClusterNodeDown"} <= rules, rules
    # Both nodes answer through nginx.
    for i in range(4):
        r = chat(stack.nginx.url, f"hello {i} {uuid.uuid4().hex}")
        assert r.http_response.status_code == 200
    served = {e["upstreams"][-1] for e in stack.nginx.access_log()}
    assert served == {n1.addr, n2.addr}, stack.nginx.access_log()


def test_an_answer_cached_through_node1_is_a_hit_through_node2(stack):
    n1, n2 = stack.nodes()
    prompt = f"shared cache {uuid.uuid4().hex}"
    keys_before = stack.redis.dbsize()
    first = chat(n1.url, prompt)
    assert first.headers.get("x-cache") == "MISS"
    # The Redis write may trail the answer.
    wait_until("node 1 stored the answer in Redis", 5,
               lambda: stack.redis.dbsize() == keys_before + 1)
    hits_before = n2.get_json("/cache/stats")["hits"]
    second = chat(n2.url, prompt)
    assert second.headers.get("x-cache") == "HIT", dict(second.headers)
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert n2.get_json("/cache/stats")["hits"] == hits_before + 1
    # Through nginx, whichever node answers.
    for _ in range(2):
        assert chat(stack.nginx.url, prompt).headers.get("x-cache") == "HIT"


def test_cache_clear_on_node2_empties_node1_memory_tier(stack):
    n1, n2 = stack.nodes()
    prompt = f"to be cleared {uuid.uuid4().hex}"
    assert chat(n1.url, prompt).headers.get("x-cache") == "MISS"
    assert n1.get_json("/cache/stats")["entries"] >= 1
    status, _, body = n2.request("DELETE", "/cache/clear")
    assert status == 200, body
    wait_until("node 1's memory tier is empty", 5,
               lambda: n1.get_json("/cache/stats")["entries"] == 0)
    assert n2.get_json("/cache/stats")["entries"] == 0
    assert stack.redis.dbsize() == 0
    assert chat(n1.url, prompt).headers.get("x-cache") == "MISS"


def test_a_websocket_stream_through_nginx(stack):
    prompt = f"over websocket {uuid.uuid4().hex}"
    want = expected_text(stack.node1, prompt)
    ws = WebSocket("127.0.0.1", stack.nginx.port, f"/ws?token={API_KEY}")
    try:
        request = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
        ws.send(json.dumps({"type": "request", "id": "s1", "provider": "mock", "model": MODEL,
                            "request": request, "metadata": {"stream": True}}))
        ws.send(json.dumps({"type": "request", "id": "w1", "provider": "mock", "model": MODEL,
                            "request": request, "metadata": {"stream": False}}))
        streamed, whole, ended = [], None, False
        for _ in range(200):  # bounded: 16 chunks, a whole answer, heartbeats
            msg = json.loads(ws.recv())
            assert msg["type"] != "error", msg
            if msg["type"] == "stream" and msg["id"] == "s1":
                for choice in msg["data"].get("choices", []):
                    streamed.append(choice.get("delta", {}).get("content") or "")
            elif msg["type"] == "stream_end" and msg["id"] == "s1":
                ended = True
            elif msg["type"] == "response" and msg["id"] == "w1":
                whole = msg["data"]["choices"][0]["message"]["content"]
            if ended and whole is not None:
                break
        assert ended and "".join(streamed) == want
        assert whole == want
    finally:
        ws.close()


class Load:
    """Non-streamed chat requests through nginx from ``threads`` threads,
    each request a new prompt (no cache hits), until stopped or ``limit``
    requests were sent."""

    def __init__(self, url: str, threads: int = 4, limit: int = 5000):
        self.url = url
        self.limit = limit
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        self.tag = uuid.uuid4().hex[:8]
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _next(self) -> int | None:
        with self.lock:
            if self.stop_flag.is_set() or self.sent >= self.limit:
                return None
            self.sent += 1
            return self.sent

    def _run(self) -> None:
        client = sdk_openai(self.url)
        while (n := self._next()) is not None:
            prompt = f"load {self.tag} {n}"
            try:
                r = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}])
                ok = r.choices[0].message.content.startswith(f'Mock answer to "{prompt}":')
                error = None if ok else f"request {n}: wrong answer {r.choices[0].message.content!r}"
            except Exception as e:  # every failure is counted, none stops the load
                error = f"request {n}: {type(e).__name__}: {e}"
            with self.lock:
                if error:
                    self.failures.append(error)
                else:
                    self.ok += 1

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def done(self) -> int:
        with self.lock:
            return self.ok + len(self.failures)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "a load thread did not finish"


def alert_state(prometheus: Prometheus, name: str, **labels) -> str | None:
    for a in prometheus.alerts():
        if a["labels"].get("alertname") == name and all(
                a["labels"].get(k) == v for k, v in labels.items()):
            return a["state"]
    return None


def test_sigkill_node1_under_load_loses_no_request_and_it_comes_back(stack):
    n1, n2, nginx, prom = stack.node1, stack.node2, stack.nginx, stack.prometheus
    wait_until("both nodes alive", 10, lambda: all_alive(n1, n2))
    log_mark = len(nginx.access_log())
    load = Load(nginx.url).start()
    try:
        wait_until("50 requests answered before the kill", 30, lambda: load.done() >= 50)
        before_kill = load.done()
        n1.signal(signal.SIGKILL)
        killed = time.monotonic()
        assert n1.wait(5) == -signal.SIGKILL

        # Each sign of the failure, timed from the kill.
        signs = {
            "node 2 declares node 1 dead": lambda: n2.member_state("node1") == "dead",
            "Prometheus shows node 1's target down":
                lambda: prom.target_health().get(n1.addr) == "down",
            "AiproxyDown pending for node 1":
                lambda: alert_state(prom, "AiproxyDown", instance=n1.addr) == "pending",
            "AiproxyClusterNodeDown pending":
                lambda: alert_state(prom, "AiproxyClusterNodeDown") == "pending",
        }
        seen: dict[str, float] = {}

        def all_seen():
            for what, check in signs.items():
                if what not in seen and check():
                    seen[what] = time.monotonic() - killed
            return len(seen) == len(signs)
        try:
            wait_until("every sign of node 1's failure", 15, all_seen, interval=0.02)
        except AssertionError as e:
            raise AssertionError(f"{e}; seen: {seen}") from None
    finally:
        load.stop()
    after_kill = load.done() - before_kill
    entries = nginx.access_log()[log_mark:]
    failovers = [e for e in entries if len(e["upstreams"]) > 1]
    dead_after = seen["node 2 declares node 1 dead"]
    report(f"SIGKILL drill: {load.done()} requests through nginx ({before_kill} before the kill, "
           f"{after_kill} after), {len(load.failures)} failed, {len(failovers)} sent on to "
           f"node 2 by nginx; after the kill: " + ", ".join(f"{what} {t:.2f} s" for what, t in seen.items()))
    assert not load.failures, f"{len(load.failures)} requests failed: {load.failures[:5]}"
    assert after_kill >= 50, f"only {after_kill} requests after the kill"
    assert dead_after <= 11, f"node 1 dead after {dead_after:.2f} s"
    assert all(e["upstreams"][-1] == n2.addr for e in entries[-20:]), entries[-20:]

    # Restarted, node 1 is alive again on both sides and gets traffic.
    n1.start()
    restarted = time.monotonic()
    wait_until("node 1 alive again on both nodes", 10, lambda: all_alive(n1, n2))
    alive_after = time.monotonic() - restarted
    wait_until("Prometheus scrapes node 1 again", 10,
               lambda: prom.target_health().get(n1.addr) == "up")
    mark = len(nginx.access_log())
    client = sdk_openai(nginx.url)
    sent = 0

    def both_served():
        nonlocal sent
        sent += 1
        assert sent <= 2000, "node 1 got no traffic back within 2000 requests"
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"back {uuid.uuid4().hex}"}])
        assert r.choices[0].message.content.startswith("Mock answer to")
        served = {e["upstreams"][-1] for e in nginx.access_log()[mark:] if e["status"] == 200}
        return served == {n1.addr, n2.addr}
    # nginx leaves a failed server alone for fail_timeout (10 s).
    wait_until("nginx sends traffic to both nodes again", 25, both_served, interval=0.1)
    back_after = time.monotonic() - restarted
    report(f"restart: node 1 alive on both nodes {alive_after:.2f} s after it answered /health; "
           f"nginx sent it traffic again {back_after:.2f} s after the restart ({sent} requests)")


def test_sigterm_during_a_stream_finishes_it_and_nginx_uses_the_other_node(stack):
    n1, n2, nginx = stack.node1, stack.node2, stack.nginx
    wait_until("both nodes alive", 10, lambda: all_alive(n1, n2))
    prompt = f"a long stream {uuid.uuid4().hex}"
    want = expected_text(n1, prompt)
    stream = sdk_openai(nginx.url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True)
    chunks = iter(stream)
    first = next(chunks)
    serving = wait_until("a node has the stream in flight", 5,
                         lambda: next((n for n in (n1, n2) if n.mock_in_flight() > 0), None))
    other = n2 if serving is n1 else n1
    serving.signal(signal.SIGTERM)
    signalled = time.monotonic()

    # While it drains, new requests (Anthropic SDK, told apart in the log
    # by their path) are answered by the other node.
    mark = len(nginx.access_log())
    client = sdk_anthropic(nginx.url)
    for i in range(6):
        text = f"during the drain {i} {uuid.uuid4().hex}"
        r = client.messages.create(model=MODEL, max_tokens=200,
                                   messages=[{"role": "user", "content": text}])
        assert r.content[0].text.startswith(f'Mock answer to "{text}":')
    assert serving.running(), "the node stopped before its stream ended"

    texts, finish = [], None
    for chunk in [first, *chunks]:
        for choice in chunk.choices:
            texts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(texts) == want
    assert finish == "stop"
    assert serving.wait(20) == 0, serving.log_text()[-2000:]
    stopped_after = time.monotonic() - signalled

    drained = [e for e in nginx.access_log()[mark:] if e["request"].startswith("POST /v1/messages")]
    assert len(drained) == 6, drained
    assert all(e["status"] == 200 and e["upstreams"][-1] == other.addr for e in drained), drained
    tried_draining = sum(1 for e in drained if serving.addr in e["upstreams"])
    report(f"SIGTERM drill: the stream ({len(texts)} chunks) finished whole; 6 of 6 requests "
           f"sent during the drain answered by the other node ({tried_draining} first tried the "
           f"draining one, which said 503); the node exited 0 {stopped_after:.2f} s after SIGTERM")
