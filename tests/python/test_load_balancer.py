"""The load balancer through the official SDKs (issue 13): the release
binary with a provider pools file (the original's provider_pools.json, or
YAML) of three OpenAI-compatible mock upstreams, or of two gemini-cli
accounts in front of the Code Assist mock.

* round robin spreads evenly whatever the client's protocol (openai,
  anthropic, google-genai SDKs); weights 3:1 give 300 of 400 requests;
  least_requests keeps streams off a slow instance;
* a failing instance is ejected while every client request succeeds, and
  comes back after the ejection time;
* a stream is retried on another instance before its first byte, and not
  after (the client sees an in-band error, one upstream attempt);
* when every instance is rate limited, each SDK gets a 503 with
  Retry-After at once; the retry budget bounds upstream attempts under a
  flood of failures (attempts <= 1.2 x requests + 3);
* ip_hash keeps a client on its instance, believing X-Forwarded-For only
  from --trusted-proxies;
* SIGHUP re-reads the pools file and keeps the state of unchanged members;
* PUT /loadbalancer/algorithm switches the algorithm (400 lists the names);
* two gemini-cli accounts, one out of quota (429): requests continue on the
  other through google-genai and openai, and each account refreshes its
  own token into its own credentials file.

tests/integration/balancer.rs covers the same with raw HTTP in-process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import anthropic
import openai
import pytest
from google.genai import errors

from mock_upstreams import OpenAIUpstream
from oauth_upstreams import CodeAssistUpstream
from support import (
    API_KEY,
    OPENAI_UPSTREAM_KEY,
    anthropic_client,
    gemini_client,
    openai_client,
)

pytestmark = pytest.mark.timeout(90)

ALGORITHMS = ["round_robin", "least_requests", "weighted", "random", "ip_hash"]
# No active checks unless a test wants them: the counts below are exact.
QUIET = {"AIPROXY_LOAD_BALANCER_HEALTH_CHECK_INTERVAL": "1h"}


@pytest.fixture(scope="module")
def servers():
    ups = [OpenAIUpstream(OPENAI_UPSTREAM_KEY) for _ in range(3)]
    yield ups
    for u in ups:
        u.close()


@pytest.fixture
def ups(servers):
    """Three OpenAI-compatible upstreams a, b, c, reset."""
    for u in servers:
        u.reset()
    yield servers
    for u in servers:
        u.reset()


def member(uuid: str, up: OpenAIUpstream, **extra) -> dict:
    # The original's bookkeeping fields are accepted and ignored.
    return {"uuid": uuid, "OPENAI_BASE_URL": f"{up.root}/v1", "isHealthy": True,
            "usageCount": 0, "errorCount": 0, "lastUsed": None, **extra}


def write_pools(path: Path, members: list[dict]) -> Path:
    if path.suffix in (".yaml", ".yml"):
        lines = ["openai-custom:"]
        for m in members:
            lines.append(f"  - uuid: {m['uuid']}")
            lines += [f"    {k}: {json.dumps(v)}" for k, v in m.items() if k != "uuid"]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(json.dumps({"openai-custom": members}, indent=2))
    return path


@pytest.fixture
def start_pool(start_gateway, ups, tmp_path):
    """Factory: a gateway over the pool ``members`` (default: a, b, c)."""

    def start(*args: str, members: list[dict] | None = None, env: dict | None = None,
              name: str = "pools.json", base_delay: str = "1ms"):
        pools = write_pools(tmp_path / name, members or [
            member("a", ups[0]), member("b", ups[1]), member("c", ups[2])])
        gw = start_gateway("--api-key", API_KEY, "--model-provider", "openai-custom",
                           "--openai-api-key", OPENAI_UPSTREAM_KEY,
                           "--provider-pools-file", str(pools), "--cache-enabled=false",
                           "--request-base-delay", base_delay, *args,
                           env={**QUIET, **(env or {})})
        gw.pools = pools
        return gw

    return start


def chats(up) -> int:
    return len(up.requests_to("/v1/chat/completions"))


def say(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def instances(gw) -> dict[str, dict]:
    r = gw.request("GET", "/loadbalancer/instances",
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 200, r.text
    return {i["id"]: i for i in r.json()["instances"]}


def wait_for(gw, uuid: str, ok, what: str, limit: float = 10) -> dict:
    deadline = time.monotonic() + limit
    while True:
        entry = instances(gw).get(uuid)
        if entry is not None and ok(entry):
            return entry
        assert time.monotonic() < deadline, f"{uuid} never became {what}: {entry}"
        time.sleep(0.05)  # status poll interval, not synchronisation


def test_round_robin_spreads_evenly_in_every_protocol(start_pool, ups, nonce):
    gw = start_pool()
    for i in range(3):
        r = openai_client(gw).chat.completions.create(model="gpt-x", messages=say(f"{nonce} {i}"))
        assert r.choices[0].message.content == f"openai says: {nonce} {i}"
        m = anthropic_client(gw).messages.create(model="gpt-x", max_tokens=50,
                                                 messages=say(f"{nonce} {i}"))
        assert m.content[0].text == f"openai says: {nonce} {i}"
        g = gemini_client(gw).models.generate_content(model="gpt-x", contents=f"{nonce} {i}")
        assert g.text == f"openai says: {nonce} {i}"
    assert [chats(u) for u in ups] == [3, 3, 3]
    listing = instances(gw)
    assert sorted(listing) == ["a", "b", "c"]
    assert all(i["healthy"] and i["requests"] == 3 for i in listing.values()), listing


def test_weights_three_to_one_over_four_hundred_requests(start_pool, ups, nonce):
    # The same pool in YAML.
    gw = start_pool("--load-balancer-algorithm", "weighted", name="pools.yaml",
                    members=[member("heavy", ups[0], weight=3), member("light", ups[1])])
    client = openai_client(gw)
    for i in range(400):
        client.chat.completions.create(model="gpt-x", messages=say(f"{nonce} {i}"))
    assert (chats(ups[0]), chats(ups[1])) == (300, 100)
    assert instances(gw)["heavy"]["weight"] == 3


def test_least_requests_keeps_streams_off_a_slow_instance(start_pool, ups, nonce):
    ups[0].stream_delay = 0.15
    gw = start_pool("--load-balancer-algorithm", "least_requests", "--workers", "16")
    failures = []

    def client(n: int):
        c = openai_client(gw)
        try:
            for i in range(6):
                text = "".join(ch.choices[0].delta.content or "" for ch in
                               c.chat.completions.create(model="gpt-x", stream=True,
                                                         messages=say(f"{nonce} {n} {i} a b c"))
                               if ch.choices)
                assert text == f"openai says: {nonce} {n} {i} a b c"
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert sum(chats(u) for u in ups) == 36
    # least_requests draws two instances at random and takes the lighter
    # (ties: the first drawn), so the count is random: 3-5 in 16 runs on a
    # quiet machine, 7 once under CI load. Round robin gives 12.
    assert chats(ups[0]) <= 8, f"the slow instance got {chats(ups[0])} of 36 (round robin: 12)"


def test_failing_instance_is_ejected_without_failed_requests_and_returns(start_pool, ups, nonce):
    gw = start_pool(env={"AIPROXY_LOAD_BALANCER_EJECTION_TIME": "2s"})
    ups[0].fail_next(500, times=None)
    client = openai_client(gw)
    for i in range(20):
        r = client.chat.completions.create(model="gpt-x", messages=say(f"{nonce} {i}"))
        assert r.choices[0].message.content == f"openai says: {nonce} {i}"
    a = instances(gw)["a"]
    assert a["state"] == "ejected" and not a["healthy"], a
    assert a["ejections"] == 1 and "server error 500" in a["last_error"], a
    assert chats(ups[0]) == 3, "three consecutive failures eject; then none are sent"
    ups[0].reset()
    wait_for(gw, "a", lambda e: e["healthy"], "healthy again")
    for i in range(6):
        client.chat.completions.create(model="gpt-x", messages=say(f"{nonce} back {i}"))
    assert chats(ups[0]) >= 2, "a serves again"
    metrics = gw.request("GET", "/metrics").text
    assert 'aiproxy_loadbalancer_ejections_total{provider="openai-custom",instance="a"} 1' \
        in metrics


def test_stream_is_retried_before_its_first_byte_only(start_pool, ups, nonce):
    gw = start_pool(members=[member("a", ups[0]), member("b", ups[1])])
    ups[0].fail_next(503, times=None)
    stream = openai_client(gw).chat.completions.create(
        model="gpt-x", stream=True, messages=say(f"{nonce} one two"))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"openai says: {nonce} one two"
    assert (chats(ups[0]), chats(ups[1])) == (1, 1)

    # Cut after its first events: an in-band error, and no second attempt.
    for u in ups:
        u.reset()
        u.truncate_after = 2
    with pytest.raises(openai.APIError) as e:
        list(openai_client(gw).chat.completions.create(
            model="gpt-x", stream=True, messages=say(f"{nonce} " + "w " * 20)))
    assert not isinstance(e.value, openai.APIConnectionError)
    assert chats(ups[0]) + chats(ups[1]) == 1


def test_every_instance_rate_limited_is_a_503_with_retry_after_for_each_sdk(start_pool, ups,
                                                                            nonce):
    gw = start_pool()
    for u in ups:
        u.fail_next(429, headers={"Retry-After": "30"}, times=None)
    started = time.monotonic()
    # The first request tries all three, then relays the last 429.
    with pytest.raises(openai.RateLimitError) as e:
        openai_client(gw).chat.completions.create(model="gpt-x", messages=say(nonce))
    assert e.value.response.headers["retry-after"] == "30"
    assert sum(chats(u) for u in ups) == 3
    # Then nothing can serve: each SDK gets a 503 with Retry-After at once.
    with pytest.raises(openai.InternalServerError) as e:
        openai_client(gw).chat.completions.create(model="gpt-x", messages=say(nonce))
    assert e.value.status_code == 503
    assert 28 <= int(e.value.response.headers["retry-after"]) <= 30
    assert "rate limited" in e.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.APIStatusError) as e:
        anthropic_client(gw).messages.create(model="gpt-x", max_tokens=5, messages=say(nonce))
    assert e.value.status_code == 503 and e.value.response.headers["retry-after"]
    assert e.value.response.json()["type"] == "error"
    with pytest.raises(errors.ServerError) as e:
        gemini_client(gw).models.generate_content(model="gpt-x", contents=nonce)
    assert e.value.code == 503 and e.value.status == "UNAVAILABLE"
    assert sum(chats(u) for u in ups) == 3, "no upstream call while all cool down"
    assert time.monotonic() - started < 5
    assert {i["state"] for i in instances(gw).values()} == {"cooldown"}


def test_retry_budget_bounds_attempts_under_a_flood(start_pool, ups):
    gw = start_pool("--workers", "64", base_delay="250ms")
    for u in ups:
        u.fail_next(503, times=None)
    n_clients, each = 24, 8

    def flood(n: int):
        c = openai_client(gw)
        for i in range(each):
            with pytest.raises(openai.InternalServerError):
                c.chat.completions.create(model="gpt-x", messages=say(f"flood {n} {i}"))

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    requests = n_clients * each
    attempts = sum(chats(u) for u in ups)
    assert attempts <= 1.2 * requests + 3, f"{attempts} attempts for {requests} requests"
    m = gw.request("GET", "/loadbalancer/metrics",
                   headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert m["budget_refusals"] > 0 and m["retries"] == attempts - requests, m


def served_by(gw, ups, forwarded: str | None) -> int:
    before = [chats(u) for u in ups]
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    openai_client(gw, default_headers=headers).chat.completions.create(
        model="gpt-x", messages=say("where"))
    moved = [i for i, u in enumerate(ups) if chats(u) > before[i]]
    assert len(moved) == 1
    return moved[0]


def test_ip_hash_is_stable_and_believes_only_trusted_proxies(start_pool, ups):
    gw = start_pool("--load-balancer-algorithm", "ip_hash")
    assert len({served_by(gw, ups, f"203.0.113.{i}") for i in range(12)}) == 1, \
        "X-Forwarded-For from an untrusted peer must be ignored"
    gw2 = start_pool("--load-balancer-algorithm", "ip_hash", "--trusted-proxies", "127.0.0.0/8")
    clients = [f"198.51.100.{i}" for i in range(24)]
    first = {c: served_by(gw2, ups, c) for c in clients}
    assert all(served_by(gw2, ups, c) == first[c] for c in clients)
    assert len(set(first.values())) == 3, first
    # The right-most untrusted address is the client: a forged left entry
    # does not move it.
    c = clients[0]
    assert served_by(gw2, ups, f"10.9.9.9, {c}") == first[c]


def test_sighup_rereads_pools_and_keeps_unchanged_members(start_pool, ups, nonce):
    gw = start_pool(env={"AIPROXY_LOAD_BALANCER_EJECTION_TIME": "5m"})
    ups[1].fail_next(500, times=None)
    client = openai_client(gw)
    for i in range(12):
        client.chat.completions.create(model="gpt-x", messages=say(f"{nonce} {i}"))
    before = instances(gw)
    assert before["b"]["state"] == "ejected"
    assert before["a"]["requests"] > 0 and before["c"]["requests"] > 0
    # a and b unchanged, c reweighted, d new.
    extra = OpenAIUpstream(OPENAI_UPSTREAM_KEY)
    try:
        write_pools(gw.pools, [member("a", ups[0]), member("b", ups[1]),
                               member("c", ups[2], weight=2), member("d", extra)])
        gw.send_signal(signal.SIGHUP)
        wait_for(gw, "d", lambda e: True, "listed after the reload")
        after = instances(gw)
        assert after["b"]["state"] == "ejected", after["b"]
        for key in ("requests", "errors", "ejections", "selections", "last_error"):
            assert after["a"][key] == before["a"][key], key
            assert after["b"][key] == before["b"][key], key
        assert after["c"]["requests"] == 0 and after["c"]["weight"] == 2, "c was rebuilt"
        assert "kept with their state: [a, b]" in gw.stderr()
        client.chat.completions.create(model="gpt-x", messages=say(nonce))
        gw.assert_running()
    finally:
        extra.close()


def test_algorithm_is_switched_at_run_time(start_pool):
    gw = start_pool("--admin-api-key", "admin-key-9")
    admin = {"Authorization": "Bearer admin-key-9"}
    r = gw.request("PUT", "/loadbalancer/algorithm", body={"algorithm": "random"},
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 403
    r = gw.request("PUT", "/loadbalancer/algorithm", body=b'{"algorithm":"random"}',
                   headers={**admin, "Content-Type": "text/plain"})
    assert r.status == 415
    r = gw.request("PUT", "/loadbalancer/algorithm", body={"algorithm": "fastest"}, headers=admin)
    assert r.status == 400
    message = r.json()["error"]["message"]
    assert all(name in message for name in ALGORITHMS), message
    r = gw.request("PUT", "/loadbalancer/algorithm", body={"algorithm": "least_requests"},
                   headers=admin)
    assert r.status == 200 and r.json() == {"algorithm": "least_requests",
                                            "previous": "round_robin"}
    listing = gw.request("GET", "/loadbalancer/instances", headers=admin).json()
    assert listing["algorithm"] == "least_requests"
    # Survives a reload whose configuration did not change it.
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in gw.stderr():
        assert time.monotonic() < deadline, gw.stderr()
        time.sleep(0.05)  # log poll interval
    listing = gw.request("GET", "/loadbalancer/instances", headers=admin).json()
    assert listing["algorithm"] == "least_requests"


# ---- two gemini-cli accounts -------------------------------------------------

QUOTA = {"error": {"code": 429, "message": "Quota exceeded for quota metric 'Generate Content "
                   "API requests per minute'", "status": "RESOURCE_EXHAUSTED",
                   "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": "60s"}]}}


def expired_creds(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_token": "ya29.expired", "refresh_token": "1//gemini-refresh",
                   "token_type": "Bearer", "expiry_date": int(time.time() * 1000) - 60_000}, f)
    return path


def test_two_gemini_accounts_one_out_of_quota(start_gateway, tmp_path, nonce):
    up = CodeAssistUpstream("ya29.unused", "proj-unused")
    try:
        up.projects |= {"proj-quota", "proj-ok"}
        up.project_errors["proj-quota"] = (429, QUOTA)
        creds = [expired_creds(tmp_path / "quota.json"), expired_creds(tmp_path / "ok.json")]
        pools = tmp_path / "provider_pools.json"
        pools.write_text(json.dumps({"gemini-cli-oauth": [
            {"uuid": "acct-quota", "customName": "quota account", "PROJECT_ID": "proj-quota",
             "GEMINI_OAUTH_CREDS_FILE_PATH": str(creds[0]), "GEMINI_BASE_URL": up.root,
             "checkModelName": None, "isHealthy": True, "usageCount": 0},
            {"uuid": "acct-ok", "customName": "working account", "PROJECT_ID": "proj-ok",
             "GEMINI_OAUTH_CREDS_FILE_PATH": str(creds[1]), "GEMINI_BASE_URL": up.root}]}))
        config = tmp_path / "aiproxy.yaml"
        config.write_text(f"gemini:\n  token_url: {json.dumps(up.root + '/token')}\n")
        gw = start_gateway("--config", str(config), "--api-key", API_KEY,
                           "--model-provider", "gemini-cli", "--provider-pools-file", str(pools),
                           "--cache-enabled=false", env=QUIET)
        for i in range(3):
            g = gemini_client(gw).models.generate_content(model="gemini-2.5-flash",
                                                          contents=f"{nonce} {i}")
            assert g.text == f"gemini says: {nonce} {i}"
            r = openai_client(gw).chat.completions.create(model="gemini-2.5-flash",
                                                          messages=say(f"{nonce} o{i}"))
            assert r.choices[0].message.content == f"gemini says: {nonce} o{i}"
        stream = gemini_client(gw).models.generate_content_stream(
            model="gemini-2.5-flash", contents=f"{nonce} streamed")
        assert "".join(c.text or "" for c in stream) == f"gemini says: {nonce} streamed"
        projects = [r.body["project"] for r in up.generations()]
        assert projects.count("proj-quota") == 1, "the account out of quota was asked once"
        assert projects.count("proj-ok") == 7
        listing = instances(gw)
        assert listing["acct-quota"]["state"] == "cooldown", listing["acct-quota"]
        assert 50_000 < listing["acct-quota"]["until_ms"] <= 60_000
        assert listing["acct-ok"]["healthy"] and listing["acct-ok"]["name"] == "working account"
        # Each account refreshed its own token into its own file.
        tokens = [json.loads(p.read_text())["access_token"] for p in creds]
        assert all(t.startswith("ya29-fresh") for t in tokens) and tokens[0] != tokens[1], tokens
        assert up.refreshes == 2
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in creds)
        health = gw.request("GET", "/health", headers={"Authorization": f"Bearer {API_KEY}"})
        files = {i["credentials"]["credentials_file"] for i in health.json()["providers"][0]["instances"]}
        assert files == {str(p) for p in creds}
        assert "ya29-fresh" not in health.text
    finally:
        up.close()
