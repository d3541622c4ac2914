"""Parses load-generator output for tests/bench.sh and prints its tables.

    bench_report.py wrk CASE SIDE T0 T1 [K0 K1] < wrk-output
    bench_report.py oha CASE SIDE T0 T1 OHA_JSON [PEAK_RSS_KIB PEAK_THREADS]
                                                  (with them: an in-flight row)
    bench_report.py table

The first two append one line to $RESULTS (tab-separated: case, side,
tool, req/s, CPU µs per request, p50 ms, p99 ms, errors, completed, peak
RSS KiB, peak threads, peak upstream connections, kernel CPU µs per
request; "-" where not measured) and print it for reading. T0 and T1 are
the measured processes' CPU clock ticks before and after, K0 and K1 the
system part of them.
`table` prints the README's tables from $RESULTS (medians over rounds)
and the labels in $LABELS (lines "CASE<TAB>text").
"""

import json
import os
import re
import statistics
import sys

RESULTS = os.environ["RESULTS"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_us(t0, t1, total):
    if t0 == "-":
        return None
    return (int(t1) - int(t0)) * 1e6 / TICK / max(total, 1)


def record(case, side, tool, rps, cpu, p50, p99, errors, total, rss="-", threads="-", conns="-",
           kernel=None):
    fields = [case, side, tool, f"{rps:.0f}", "-" if cpu is None else f"{cpu:.1f}",
              "-" if p50 is None else f"{p50:.3f}", "-" if p99 is None else f"{p99:.3f}",
              str(errors), str(total), str(rss), str(threads), str(conns),
              "-" if kernel is None else f"{kernel:.1f}"]
    with open(RESULTS, "a") as f:
        f.write("\t".join(fields) + "\n")
    print("  %-22s %-8s %-4s %9s req/s %9s µs CPU  p50 %9s ms  p99 %9s ms  %s errors / %s"
          % tuple(fields[:9])
          + ("" if kernel is None else f"  (kernel {fields[12]} µs)")
          + ("" if threads == "-" else f"  peak RSS {rss} KiB, peak threads {threads}, "
             f"peak upstream connections {conns}"))


def wrk(case, side, t0, t1, k0="-", k1="-"):
    out = sys.stdin.read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(n) for n in m.groups())
    record(case, side, "wrk", rps, cpu_us(t0, t1, total), None, None, errors, total,
           kernel=cpu_us(k0, k1, total))


def oha(case, side, t0, t1, path, rss="-", threads="-", conns="-"):
    try:
        r = json.load(open(path))
    except ValueError:  # oha killed by its time bound
        r = {"summary": {"requestsPerSec": 0}, "latencyPercentiles": {"p50": None, "p99": None},
             "errorDistribution": {"oha gave no result": 1}}
    s, p = r["summary"], r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    total = sum(codes.values())
    errors = total - codes.get("200", 0) + sum(r.get("errorDistribution", {}).values())
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    tool = "oha" if threads == "-" else "inflight"
    record(case, side, tool, s["requestsPerSec"] or 0, cpu_us(t0, t1, total),
           ms(p["p50"]), ms(p["p99"]), errors, codes.get("200", 0), rss, threads, conns)


# ---- tables ----------------------------------------------------------------

def load():
    rows = {}
    for line in open(RESULTS):
        case, side, tool, *vals = line.rstrip("\n").split("\t")
        rows.setdefault((case, side, tool), []).append(vals)
    return rows


def median(rows, key, i):
    # Rows recorded before a column existed are shorter.
    vals = [float(v[i]) for v in rows.get(key, []) if len(v) > i and v[i] != "-"]
    return statistics.median(vals) if vals else None


def num(v, digits=0):
    return "?" if v is None else f"{v:,.{digits}f}"


def ms(v):
    if v is None:
        return "?"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms"


def ratio(a, b):
    return "?" if a is None or not b else f"{a / b:.2f}×"


def table():
    rows = load()
    labels = {}
    if os.path.exists(os.environ.get("LABELS", "")):
        for line in open(os.environ["LABELS"]):
            case, _, text = line.rstrip("\n").partition("\t")
            labels[case] = text
    m = lambda case, side, tool, i: median(rows, (case, side, tool), i)  # noqa: E731
    RPS, CPU, P50, P99, ERR, DONE, RSS, THREADS, CONNS, KERNEL = range(10)

    if any(k[2] != "inflight" for k in rows):
        print("| case | nginx | aiproxy | ratio (aiproxy / nginx) | goal |")
        print("|---|---|---|---|---|")

    def unary_cell(case, side):
        return (f"{num(m(case, side, 'wrk', RPS))} req/s, {num(m(case, side, 'wrk', CPU))} µs "
                f"CPU/req, p99 {ms(m(case, side, 'oha', P99))}")

    def unary_ratio(case):
        return (f"{ratio(m(case, 'aiproxy', 'wrk', RPS), m('unary', 'nginx', 'wrk', RPS))} req/s, "
                f"{ratio(m(case, 'aiproxy', 'wrk', CPU), m('unary', 'nginx', 'wrk', CPU))} CPU, "
                f"{ratio(m(case, 'aiproxy', 'oha', P99), m('unary', 'nginx', 'oha', P99))} p99")

    if ("unary", "nginx", "wrk") in rows:
        print(f"| {labels.get('unary', 'unary, same protocol')} | {unary_cell('unary', 'nginx')} "
              f"| {unary_cell('unary', 'aiproxy')} | {unary_ratio('unary')} "
              "| ≥ 0.9× req/s, p99 ≤ 1.5× nginx's |")
    if ("unary_anthropic", "aiproxy", "wrk") in rows:
        print(f"| {labels.get('unary_anthropic', 'unary, Anthropic client')} | — (the row above) "
              f"| {unary_cell('unary_anthropic', 'aiproxy')} | {unary_ratio('unary_anthropic')} "
              "| ≥ 0.8× req/s |")
    def wrk_row(case, default_label, rate, per, goal):
        """Both sides' throughput and CPU from wrk alone, and their ratios."""
        def cell(side):
            return (f"{num(m(case, side, 'wrk', RPS))} {rate}, "
                    f"{num(m(case, side, 'wrk', CPU))} µs CPU/{per}")
        print(f"| {labels.get(case, default_label)} | {cell('nginx')} | {cell('aiproxy')} "
              f"| {ratio(m(case, 'aiproxy', 'wrk', RPS), m(case, 'nginx', 'wrk', RPS))} {rate}, "
              f"{ratio(m(case, 'aiproxy', 'wrk', CPU), m(case, 'nginx', 'wrk', CPU))} CPU | {goal} |")

    if ("unary_static", "nginx", "wrk") in rows:
        wrk_row("unary_static", "unary, static upstream", "req/s", "req",
                "— (the goals are set with the mock)")
    if ("stream", "nginx", "wrk") in rows:
        wrk_row("stream", "stream, no pacing", "streams/s", "stream", "≥ 0.6× streams/s")
    if ("paced", "nginx", "wrk") in rows:
        n_cpu = m("paced", "nginx", "wrk", CPU)
        a_cpu = m("paced", "aiproxy", "wrk", CPU)
        x_cpu = m("paced_anthropic", "aiproxy", "wrk", CPU)
        print(f"| {labels.get('paced', 'stream, paced')} | {num(n_cpu)} µs CPU/stream "
              f"({num(m('paced', 'nginx', 'wrk', RPS))} streams/s) | {num(a_cpu)} µs "
              f"(Anthropic client {num(x_cpu)} µs) | {ratio(a_cpu, n_cpu)} CPU "
              f"(Anthropic client {ratio(x_cpu, n_cpu)}) | ≤ 1.5× nginx's CPU per stream |")
    rates = sorted({int(c[4:]) for c, _, _ in rows if c.startswith("rate")})
    for rate in rates:
        case = f"rate{rate}"

        def cell(side):
            got = m(case, side, "oha", RPS)
            short = got is not None and got < 0.95 * rate
            return (f"p50 {ms(m(case, side, 'oha', P50))}, p99 {ms(m(case, side, 'oha', P99))}"
                    + (f" (only {num(got)} req/s served)" if short else ""))
        print(f"| unary at {rate:,} req/s offered ({labels.get('conns', '?')} conns), latency | "
              f"{cell('nginx')} | {cell('aiproxy')} "
              f"| {ratio(m(case, 'aiproxy', 'oha', P99), m(case, 'nginx', 'oha', P99))} p99 "
              "| p99 ≤ 1.5× nginx's |")
    if ("cache", "aiproxy", "wrk") in rows:
        print(f"| {labels.get('cache', 'cache hits')} | — | {unary_cell('cache', 'aiproxy')} "
              f"| {ratio(m('cache', 'aiproxy', 'wrk', RPS), m('unary', 'nginx', 'wrk', RPS))} "
              "req/s of nginx forwarding | — |")
    if ("cache1000", "aiproxy", "oha") in rows:
        print(f"| cache hits at 1,000 req/s offered | — | p50 {ms(m('cache1000', 'aiproxy', 'oha', P50))}, "
              f"p99 {ms(m('cache1000', 'aiproxy', 'oha', P99))} | — | — |")

    direct = [f"{num(m('unary', 'direct', 'wrk', RPS))} req/s unary "
              f"({num(m('unary', 'direct', 'wrk', CPU))} µs CPU per request in the mock)"
              if ("unary", "direct", "wrk") in rows else "",
              f"{num(m('stream', 'direct', 'wrk', RPS))} streams/s "
              f"({num(m('stream', 'direct', 'wrk', CPU))} µs CPU per stream in the upstream)"
              if ("stream", "direct", "wrk") in rows else ""]
    if any(direct):
        print("\nThe upstream alone (wrk straight to it, no proxy): "
              + "; ".join(d for d in direct if d) + ".")

    behind = [f"{what}: {num(m(case, 'nginx_upstream', 'wrk', CPU), 1)} µs behind nginx, "
              f"{num(m(case, 'aiproxy_upstream', 'wrk', CPU), 1)} µs behind aiproxy"
              for case, what in (("unary", "the mock"), ("unary_static", "the static nginx"))
              if (case, "nginx_upstream", "wrk") in rows and (case, "aiproxy_upstream", "wrk") in rows]
    if behind:
        print("\nThe upstream's CPU per unary request, by the proxy in front of it: "
              + "; ".join(behind) + ".")

    split = []
    for case, what in (("unary", "unary"), ("unary_static", "unary from the static upstream"),
                       ("stream", "unpaced streams")):
        sides = [(side, m(case, side, "wrk", CPU), m(case, side, "wrk", KERNEL))
                 for side in ("nginx", "aiproxy")]
        if all(cpu is not None and kernel is not None for _, cpu, kernel in sides):
            split.append(what + ": " + ", ".join(
                f"{side} {num(cpu - kernel, 1)} + {num(kernel, 1)} µs" for side, cpu, kernel in sides))
    if split:
        print("\nCPU per request (per stream) in user space + in the kernel, medians: "
              + "; ".join(split) + ".")
    rounds = rows.get(("unary", "aiproxy", "wrk"), [])
    ngx = rows.get(("unary", "nginx", "wrk"), [])
    if rounds and len(rounds) == len(ngx):
        print("\nUnary round by round, aiproxy / nginx: " + "; ".join(
            f"{float(a[RPS]) / float(n[RPS]):.2f}× req/s at {a[CPU]} / {n[CPU]} µs CPU"
            + (f" (kernel {a[KERNEL]} / {n[KERNEL]})" if len(a) > KERNEL and len(n) > KERNEL else "")
            for a, n in zip(rounds, ngx)) + ".")

    inflight = [k for k in rows if k[2] == "inflight"]
    if inflight:
        print()
        print("| in flight at once | errors | completed | p50 | p99 | peak in flight (upstream "
              "connections) | peak RSS (nginx: sum over its processes) | peak threads |")
        print("|---|---|---|---|---|---|---|---|")
        for key in sorted(inflight, key=lambda k: (k[0] != "inflight_unary", k[0], k[1] != "aiproxy")):
            case, side, _ = key
            rss = m(case, side, "inflight", RSS)
            died = labels.get(f"{case}_{side}_died")
            errors = num(m(case, side, "inflight", ERR)) + (f" (the process died: {died})" if died else "")
            print(f"| {side}, {labels.get(case, case)} | {errors} "
                  f"| {num(m(case, side, 'inflight', DONE))} | {ms(m(case, side, 'inflight', P50))} "
                  f"| {ms(m(case, side, 'inflight', P99))} | {num(m(case, side, 'inflight', CONNS))} "
                  f"| {'—' if rss is None else f'{rss / 1024:,.0f} MiB'} "
                  f"| {num(m(case, side, 'inflight', THREADS))} |")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"wrk": wrk, "oha": oha, "table": table}[mode](*args)
