#!/usr/bin/env bash
# Benchmark: aiproxy in front of a fast mock upstream, on loopback.
#
# Not a test: it prints numbers for the README's performance section.
# The mock upstream is aiproxy itself serving the built-in mock provider
# (an OpenAI-compatible server answering in microseconds), so "direct"
# is the upstream alone and "proxied" adds one aiproxy hop in front.
#
#   tests/bench.sh            # full run, ~5 minutes
#   DURATION=5s tests/bench.sh
#   WS_ONLY=1 tests/bench.sh  # only the WebSocket rows (~2 minutes)
#
# Needs oha (cargo install oha --locked); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
BIN=${AIPROXY_BIN:-target/release/aiproxy}
OUT=${BENCH_OUT:-tests/output/bench}
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

[ -n "${WS_ONLY:-}" ] || command -v oha >/dev/null || cargo install oha --locked
[ -x "$BIN" ] || cargo build --release
WS_BENCH=${WS_BENCH:-target/release/examples/ws_bench}
[ -x "$WS_BENCH" ] || cargo build --release --example ws_bench

# shellcheck source=tests/bench_lib.sh
. tests/bench_lib.sh

# Starts aiproxy with the given flags; sets $PORT and $PID.
start() {
  PORT=$(free_port)
  "$BIN" --port "$PORT" --log-level warn "$@" 2>>"$OUT/aiproxy.log" &
  PID=$!
  pids+=("$PID")
  wait_ready "$PORT"
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

BODY='{"model":"mock-small","messages":[{"role":"user","content":"Say hello to the benchmark"}]}'

# Runs oha; prints "rps p50_ms p99_ms errors total".
load() {
  local url=$1 conns=$2 extra=${3:-}
  # shellcheck disable=SC2086 # $extra is a list of options
  oha --no-tui -z "$DURATION" -c "$conns" --wait-ongoing-requests-after-deadline -m POST -H 'Content-Type: application/json' \
      -d "$BODY" --output-format json $extra "$url" > "$OUT/oha.json"
  python3 - "$OUT/oha.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]; p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
errors = sum(v for k, v in codes.items() if k != "200") + sum(r.get("errorDistribution", {}).values())
print(f'{s["requestsPerSec"]:.0f} {p["p50"]*1000:.3f} {p["p99"]*1000:.3f} {errors} {sum(codes.values())}')
EOF
}

echo "== machine: $(nproc) cores, $(uname -r); aiproxy $("$BIN" --version); open files $(ulimit -n)"

# WebSocket: 10,000 connections held open on one aiproxy serving the mock
# provider (cache off: every request is answered by the provider), 1,000
# requests/s spread over them, then the same requests at the same rate
# over HTTP keep-alive connections to the same process, then throughput
# over 64 WebSockets against 64 HTTP keep-alive connections. The load
# generator is examples/ws_bench.rs (one thread, non-blocking sockets,
# bounded in connections and in time); it reads aiproxy's RSS from /proc.
websocket_rows() {
  local conns=${WS_CONNECTIONS:-10000} rate=${WS_RATE:-1000} secs=${WS_SECONDS:-30}
  start --model-provider mock --cache-enabled=false --api-key bench \
        --websocket-max-connections "$conns" --max-connections $((conns + 1000))
  printf '\n'
  "$WS_BENCH" "127.0.0.1:$PORT" bench "$PID" "$conns" "$rate" "$secs" 64 "${WS_THROUGHPUT_SECONDS:-10}"
  kill "$PID"; wait "$PID" 2>/dev/null || true
}
websocket_rows
[ -z "${WS_ONLY:-}" ] || exit 0

start --model-provider mock --workers 64 --cache-enabled=false
UP_PORT=$PORT; UP_PID=$PID
echo "upstream idle RSS: $(rss_kib "$UP_PID") KiB"

# The proxy under test: plain forwarding (cache off so every request goes
# upstream), metrics on as by default.
start --model-provider openai-custom --openai-api-key bench \
      --openai-base-url "http://127.0.0.1:$UP_PORT/v1" --workers 256 --cache-enabled=false
PX_PORT=$PORT; PX_PID=$PID
echo "proxy idle RSS (256 workers allowed): $(rss_kib "$PX_PID") KiB"

row() { printf '%-40s %10s %10s %10s %8s %12s\n' "$@"; }
printf '\n'; row run req/s p50_ms p99_ms errors cpu_us/req
for conns in 1 16 64; do
  read -r rps p50 p99 err _ < <(load "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$conns")
  row "direct to mock, $conns conns" "$rps" "$p50" "$p99" "$err" -
done

# Runs a load against $1 at $2 connections and prints a row with the CPU
# time per request of process $3.
measured() {
  local url=$1 conns=$2 pid=$3 label=$4 extra=${5:-}
  local t0 t1 rps p50 p99 err total
  t0=$(cpu_ticks "$pid")
  read -r rps p50 p99 err total < <(load "$url" "$conns" "$extra")
  t1=$(cpu_ticks "$pid")
  row "$label" "$rps" "$p50" "$p99" "$err" \
    "$(python3 -c "print(f'{($t1-$t0)*1e6/$(getconf CLK_TCK)/max($total,1):.1f}')")"
}
for conns in 1 16 64 256; do
  measured "http://127.0.0.1:$PX_PORT/v1/chat/completions" "$conns" "$PX_PID" "through aiproxy, $conns conns"
done
echo "proxy RSS after load: $(rss_kib "$PX_PID") KiB (peak $(hwm_kib "$PX_PID") KiB)"

# Streamed answers, each read to its end (the mock sends ~20 events with
# no delay): the cost of the per-stream reader thread and SSE conversion.
STREAM_BODY='{"model":"mock-small","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
for conns in 1 16; do
  BODY=$STREAM_BODY measured "http://127.0.0.1:$UP_PORT/v1/chat/completions" "$conns" "$UP_PID" "streamed, direct to mock, $conns conns"
  BODY=$STREAM_BODY measured "http://127.0.0.1:$PX_PORT/v1/chat/completions" "$conns" "$PX_PID" "streamed through aiproxy, $conns conns"
done

# Metrics overhead: fresh proxies with metrics on and off, alternating,
# three times each (one pair alone is within run-to-run noise).
for round in 1 2 3; do
  for metrics in true false; do
    start --model-provider openai-custom --openai-api-key bench \
          --openai-base-url "http://127.0.0.1:$UP_PORT/v1" --cache-enabled=false --metrics-enabled=$metrics
    measured "http://127.0.0.1:$PORT/v1/chat/completions" 64 "$PID" "metrics $metrics (round $round), 64 conns"
    kill "$PID"; wait "$PID" 2>/dev/null || true
  done
done

# Cache hits: the same request over and over with the cache on.
start --model-provider openai-custom --openai-api-key bench \
      --openai-base-url "http://127.0.0.1:$UP_PORT/v1"
CA_PORT=$PORT; CA_PID=$PID
for conns in 16 64; do
  measured "http://127.0.0.1:$CA_PORT/v1/chat/completions" "$conns" "$CA_PID" "cache hits, $conns conns"
done
measured "http://127.0.0.1:$CA_PORT/v1/chat/completions" 16 "$CA_PID" "cache hits, 1000 req/s offered" "-q 1000"
curl -fs "http://127.0.0.1:$CA_PORT/cache/stats"; echo

# Throughput with wrk, a lighter load generator than oha (its latency
# figures are not trustworthy here, its request rate is): cache hits
# against plain forwarding, same body, 64 connections.
if command -v wrk >/dev/null; then
  lua="$OUT/post.lua"
  printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' "$BODY" > "$lua"
  wrk_rps() { wrk -t2 -c64 -d"$DURATION" -s "$lua" "$1" | awk '/Requests\/sec/ {print int($2)}'; }
  fwd=$(wrk_rps "http://127.0.0.1:$PX_PORT/v1/chat/completions")
  hit=$(wrk_rps "http://127.0.0.1:$CA_PORT/v1/chat/completions")
  echo "wrk, 64 conns: forwarding $fwd req/s, cache hits $hit req/s ($(python3 -c "print(f'{$hit/max($fwd,1):.1f}')")x)"
fi
kill "$CA_PID"; wait "$CA_PID" 2>/dev/null || true

# In-flight capacity: a 1,000 ms upstream and 2,000 concurrent clients.
kill "$UP_PID" "$PX_PID"; wait "$UP_PID" "$PX_PID" 2>/dev/null || true
start --model-provider mock --mock-latency 1000ms --workers 2200 --cache-enabled=false
SLOW_PORT=$PORT
start --model-provider openai-custom --openai-api-key bench \
      --openai-base-url "http://127.0.0.1:$SLOW_PORT/v1" --workers 2100 --cache-enabled=false
read -r rps p50 p99 err _ < <(load "http://127.0.0.1:$PORT/v1/chat/completions" 2000)
printf '\n'; row "1000 ms upstream, 2000 conns" "$rps" "$p50" "$p99" "$err" -
echo "proxy RSS with 2000 in flight: peak $(hwm_kib "$PID") KiB"
