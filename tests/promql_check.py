#!/usr/bin/env python3
"""Static checks of the Prometheus and Grafana files in packaging/.

- packaging/grafana/aiproxy-dashboard.json: valid JSON, stable uid, id null,
  unique panel ids, every datasource is the provisioned `prometheus` uid,
  every panel has a query, every aiproxy_* metric name it uses exists, and
  every PromQL `expr` parses: the expressions (Grafana variables replaced by
  plain values) become recording rules in a temporary file that
  `promtool check rules` must accept.
- packaging/prometheus: `promtool check rules`, `promtool test rules`,
  `promtool check config`.

Needs promtool (Debian package `prometheus`). Usage: tests/promql_check.py
Prints one line per check and a closing "N passed, M failed" line.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "packaging/grafana/aiproxy-dashboard.json")
PROM = os.path.join(ROOT, "packaging/prometheus")

# Every name aiproxy exposes (src/metrics/mod.rs), plus histogram series.
METRICS = {
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
    "aiproxy_cache_refused_total",
    "aiproxy_cache_redis_up",
    "aiproxy_cache_redis_errors_total",
    "aiproxy_websocket_connections",
    "aiproxy_websocket_messages_total",
    "aiproxy_websocket_closes_total",
    "aiproxy_loadbalancer_instance_healthy",
    "aiproxy_loadbalancer_selections_total",
    "aiproxy_loadbalancer_ejections_total",
    "aiproxy_loadbalancer_retries_total",
    "aiproxy_loadbalancer_budget_refusals_total",
    "aiproxy_cluster_nodes",
    "aiproxy_cluster_datagrams_dropped_total",
    "aiproxy_cluster_datagrams_total",
    "aiproxy_cluster_bytes_total",
    "aiproxy_cluster_settings_version",
}
HISTOGRAMS = {
    "aiproxy_http_request_duration_seconds",
    "aiproxy_provider_request_duration_seconds",
    "aiproxy_provider_time_to_first_token_seconds",
}
KNOWN = METRICS | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "$instance": ".*",
    "${instance}": ".*",
}

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else "\n     " + detail.replace("\n", "\n     ")))


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def substitute(expr):
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    return expr


def promtool(*args, cwd=None):
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def main():
    if shutil.which("promtool") is None:
        print("FAIL promtool not found: apt-get install -y --no-install-recommends prometheus")
        print("0 passed, 1 failed")
        return 1

    with open(DASHBOARD) as f:
        try:
            dash = json.load(f)
            check("dashboard is valid JSON", True)
        except json.JSONDecodeError as e:
            check("dashboard is valid JSON", False, str(e))
            dash = {"panels": []}
    check("dashboard has a stable uid and id null", bool(dash.get("uid")) and dash.get("id") is None)
    panels = list(all_panels(dash.get("panels", [])))
    ids = [p.get("id") for p in panels]
    check("panel ids are unique", len(ids) == len(set(ids)), f"ids: {ids}")
    datasources = [p["datasource"] for p in panels if "datasource" in p]
    datasources += [t["datasource"] for p in panels for t in p.get("targets", []) if "datasource" in t]
    datasources += [v["datasource"] for v in dash.get("templating", {}).get("list", []) if "datasource" in v]
    bad = [d for d in datasources if d != {"type": "prometheus", "uid": "prometheus"}]
    check("every datasource is the provisioned prometheus uid", not bad, f"{bad}")
    empty = [p["title"] for p in panels if p.get("type") != "row" and not p.get("targets")]
    check("every panel has a query", not empty, f"{empty}")

    exprs = [(p["id"], t["refId"], t["expr"]) for p in panels for t in p.get("targets", [])]
    check(f"dashboard has PromQL expressions ({len(exprs)})", len(exprs) > 10)
    used = set()
    for _, _, e in exprs:
        used |= set(re.findall(r"\baiproxy_[a-z0-9_]+", e))
    unknown = sorted(used - KNOWN)
    check("every aiproxy_* name in the dashboard exists", not unknown, f"unknown: {unknown}")
    missing = sorted(n for n in METRICS - {"aiproxy_build_info"} if not any(u.startswith(n) for u in used))
    check("the dashboard shows every family", not missing, f"not shown: {missing}")

    with tempfile.TemporaryDirectory() as tmp:
        rules = {"groups": [{"name": "grafana-exprs", "rules": [
            {"record": f"grafana:panel_{pid}_{ref}", "expr": substitute(e)} for pid, ref, e in exprs
        ]}]}
        path = os.path.join(tmp, "grafana-exprs.rules.json")
        with open(path, "w") as f:
            json.dump(rules, f, indent=1)
        ok, out = promtool("check", "rules", path)
        check("promtool check rules: every dashboard expr parses", ok, out)

    ok, out = promtool("check", "rules", "aiproxy.rules.yml", cwd=PROM)
    check("promtool check rules aiproxy.rules.yml", ok, out)
    ok, out = promtool("test", "rules", "aiproxy.rules.test.yml", cwd=PROM)
    check("promtool test rules aiproxy.rules.test.yml", ok, out)
    ok, out = promtool("check", "config", "prometheus.yml", cwd=PROM)
    check("promtool check config prometheus.yml", ok, out)

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
