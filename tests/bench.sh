#!/usr/bin/env bash
# Benchmark: aiproxy beside nginx as a plain L7 reverse proxy, both in
# front of the same mock upstream on loopback, in one run.
#
# Not a test: it prints the README's performance tables. The upstream is
# aiproxy itself serving the built-in mock provider (an OpenAI-compatible
# server answering in microseconds). nginx (Debian's package) gets a config
# written here: proxy_pass to an upstream block with keepalive, HTTP/1.1
# upstream, proxy_buffering off, Host localhost (aiproxy without an API key
# answers only loopback names), access log off (aiproxy logs nothing per
# request at --log-level warn), per-connection request limits raised so
# that neither proxy reconnects during a run. Every pair of rows runs
# alternately, ROUNDS times; the tables give the median of the rounds
# (three by default: the median of two is their mean, and one slow
# minute of a shared VM moved a row by a quarter).
# Throughput and CPU come from wrk (distinct prompts, a generated Lua
# script), latency from oha (distinct prompts, a generated body file).
# CPU per request is the utime + stime of the proxy's processes (nginx:
# master and workers) over the requests completed.
#
#   tests/bench.sh                          # everything, ~13 minutes
#   DURATION=2s ROUNDS=1 PARTS=unary tests/bench.sh   # one part, short
#
# PARTS, comma-separated (all by default):
#   ws        WebSocket rows (examples/ws_bench.rs)
#   unary     OpenAI client, then Anthropic client, to the OpenAI mock;
#             then the OpenAI client to a static upstream (an nginx
#             answering the mock's answer, a few µs a request), with the
#             upstream's CPU per request by the proxy in front: the mock
#             costs about as much a request as either proxy, which on
#             shared cores dilutes the ratio of the two
#   stream    streams of 8 content deltas, no pacing, from an nginx
#             replaying the mock's answer (STREAM_UPSTREAM=static; the
#             mock itself costs more per stream than either proxy)
#   paced     streams of 16 content deltas 2 ms apart (20 SSE events),
#             OpenAI and Anthropic clients, CONNS streams at once
#   rates     unary latency at fixed offered rates (RATES)
#   cache     cache hits
#   inflight  IN_FLIGHT requests at once against a slow upstream (5 s:
#             connecting 10,000 clients takes seconds, and with a 1 s
#             upstream the first requests end before the last begin; the
#             row shows the peak reached), and as many slow streams
#             (tests/bench_sse_mock.py upstream); each in-flight request
#             holds two descriptors in the proxy, so the open-files hard
#             limit can lower IN_FLIGHT (it says so)
# Knobs: DURATION (10s) per load, ROUNDS (3), CONNS (64), RATES
#   ("1000 5000 10000"), IN_FLIGHT (10000), IN_FLIGHT_ROUNDS (1 request
#   per client), IN_FLIGHT_LATENCY (5s), SLOW_DELTAS (20), SLOW_DELAY
#   (0.5 s), WS_CONNECTIONS (10000), WS_RATE (1000), WS_SECONDS (20),
#   NGINX_WORKERS (nproc), STREAM_UPSTREAM (static, or mock: see the
#   stream part), AIPROXY_BIN, BENCH_OUT.
#
# Needs wrk, oha, nginx (installed when missing: apt-get, cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
RATES=${RATES:-1000 5000 10000}
PARTS=${PARTS:-ws,unary,stream,paced,rates,cache,inflight}
IN_FLIGHT=${IN_FLIGHT:-10000}
IN_FLIGHT_ROUNDS=${IN_FLIGHT_ROUNDS:-1}
IN_FLIGHT_LATENCY=${IN_FLIGHT_LATENCY:-5s}
SLOW_DELTAS=${SLOW_DELTAS:-20}
SLOW_DELAY=${SLOW_DELAY:-0.5}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
STREAM_UPSTREAM=${STREAM_UPSTREAM:-static}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${AIPROXY_BIN:-$TARGET/release/aiproxy}
WS_BENCH=${WS_BENCH:-$TARGET/release/examples/ws_bench}
OUT=${BENCH_OUT:-tests/output/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RESULTS="$OUT/results.tsv" LABELS="$OUT/labels.tsv"
: >"$RESULTS"; : >"$LABELS"
REPORT=(python3 tests/bench_report.py)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

has() { [[ ",$PARTS," == *",$1,"* ]]; }
need() {  # need COMMAND INSTALL…
  command -v "$1" >/dev/null && return 0
  "${@:2}" >&2 || { echo "$1 is needed" >&2; exit 1; }
}
need wrk apt-get install -y wrk
need nginx apt-get install -y nginx
need oha cargo install oha --locked
[ -x "$BIN" ] || cargo build --release
! has ws || [ -x "$WS_BENCH" ] || cargo build --release --example ws_bench

# shellcheck source=tests/bench_lib.sh
. tests/bench_lib.sh

stop() { kill "$@" 2>/dev/null || true; wait "$@" 2>/dev/null || true; }

# start_nginx NAME WORKER_CONNECTIONS UPSTREAM_PORT…: one nginx, one server
# per upstream; sets NGINX_PORTS (in the upstreams' order) and NGINX_PIDS
# (master and workers).
start_nginx() {
  local name=$1 connections=$2 dir="$OUT/nginx-$1" servers="" port i=0 master
  shift 2
  mkdir -p "$dir/tmp"
  NGINX_PORTS=()
  for up in "$@"; do
    port=$(free_port)
    NGINX_PORTS+=("$port")
    servers+="
  upstream u$i { server 127.0.0.1:$up; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://u$i;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host localhost;
      proxy_buffering off;
    }
  }"
    i=$((i + 1))
  done
  cat >"$dir/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $connections; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
$servers
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log; daemon off;" &
  master=$!
  pids+=("$master")
  wait_ready "${NGINX_PORTS[0]}"
  for _ in $(seq 1 50); do
    read -ra NGINX_PIDS <<<"$(with_children "$master")"
    [ "${#NGINX_PIDS[@]}" -le "$NGINX_WORKERS" ] || return 0
    sleep 0.1
  done
  echo "nginx did not start its workers" >&2; exit 1
}
stop_nginx() { stop "${NGINX_PIDS[0]}"; }

# Request bodies: PRE + a distinct word + POST.
OA_PRE='{"model":"mock-small","messages":[{"role":"user","content":"bench '
AN_PRE='{"model":"mock-small","max_tokens":256,"messages":[{"role":"user","content":"bench '
AN_STREAM_PRE='{"model":"mock-small","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"bench '
POST=': say hello to the benchmark"}]'
UNARY_POST="$POST}"
STREAM8_POST="$POST,\"max_tokens\":8,\"stream\":true}"
PACED_POST="$POST,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
ANTHROPIC=(-H 'anthropic-version: 2023-06-01')

# workload NAME PATH PRE POST [HEADER]: $OUT/NAME.lua for wrk (one
# distinct prompt per request and thread) and $OUT/NAME.lines for oha -Z
# (20,000 distinct bodies).
workload() {
  local name=$1 path=$2 pre=$3 post=$4 header=${5:-}
  {
    echo 'local headers = {["Content-Type"] = "application/json"}'
    [ -z "$header" ] || echo "headers[\"${header%%: *}\"] = \"${header#*: }\""
    echo "local path, pre, post = \"$path\", [[$pre]], [[$post]]"
    cat <<'EOF'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local n = 0
function request()
  n = n + 1
  return wrk.format("POST", path, headers, pre .. tid .. "-" .. n .. post)
end
EOF
  } >"$OUT/$name.lua"
  python3 -c 'import sys
with open(sys.argv[1], "w") as f:
    for i in range(20000):
        f.write(f"{sys.argv[2]}o{i}{sys.argv[3]}\n")' "$OUT/$name.lines" "$pre" "$post"
}
workload openai /v1/chat/completions "$OA_PRE" "$UNARY_POST"
workload anthropic /v1/messages "$AN_PRE" "$UNARY_POST" 'anthropic-version: 2023-06-01'
workload stream8 /v1/chat/completions "$OA_PRE" "$STREAM8_POST"
workload paced /v1/chat/completions "$OA_PRE" "$PACED_POST"
workload paced_anthropic /v1/messages "$AN_STREAM_PRE" "$UNARY_POST" 'anthropic-version: 2023-06-01'

# wrk_run CASE SIDE URL WORKLOAD PID…: wrk for DURATION at CONNS
# connections; records req/s and CPU µs per request of PID… (and the
# kernel's part of it), and with UPSTREAM_PIDS set the upstream's CPU µs
# per request as side SIDE_upstream (the proxy in front changes what the
# upstream spends).
UPSTREAM_PIDS=()
wrk_run() {
  local case=$1 side=$2 url=$3 workload=$4 t0 t1 k0 k1 u0=0 u1=0 out
  shift 4
  t0=$(cpu_ticks "$@")
  k0=$(kernel_ticks "$@")
  [ "${#UPSTREAM_PIDS[@]}" -eq 0 ] || u0=$(cpu_ticks "${UPSTREAM_PIDS[@]}")
  out=$(wrk -t2 -c"$CONNS" -d"$DURATION" -s "$OUT/$workload.lua" "$url")
  t1=$(cpu_ticks "$@")
  k1=$(kernel_ticks "$@")
  [ "${#UPSTREAM_PIDS[@]}" -eq 0 ] || u1=$(cpu_ticks "${UPSTREAM_PIDS[@]}")
  printf '== %s %s\n%s\n' "$case" "$side" "$out" >>"$OUT/wrk.log"
  "${REPORT[@]}" wrk "$case" "$side" "$t0" "$t1" "$k0" "$k1" <<<"$out"
  [ "${#UPSTREAM_PIDS[@]}" -eq 0 ] ||
    "${REPORT[@]}" wrk "$case" "${side}_upstream" "$u0" "$u1" <<<"$out"
}

# oha_run CASE SIDE URL WORKLOAD "OHA OPTIONS" PID…: oha for DURATION at
# CONNS connections; records latency and CPU µs per request of PID….
oha_run() {
  local case=$1 side=$2 url=$3 workload=$4 extra=$5 t0 t1 headers=()
  shift 5
  [[ $workload != *anthropic* ]] || headers=("${ANTHROPIC[@]}")
  t0=$(cpu_ticks "$@")
  # shellcheck disable=SC2086 # $extra is a list of options
  oha --no-tui -z "$DURATION" -c "$CONNS" --wait-ongoing-requests-after-deadline -m POST \
      -H 'Content-Type: application/json' "${headers[@]}" -Z "$OUT/$workload.lines" \
      --output-format json $extra "$url" >"$OUT/oha.json"
  t1=$(cpu_ticks "$@")
  "${REPORT[@]}" oha "$case" "$side" "$t0" "$t1" "$OUT/oha.json"
}

# sse_events URL BODY [CURL OPTION…]: "N SSE events, D content deltas"
# of one streamed answer.
sse_events() {
  local url=$1 body=$2 answer
  shift 2
  answer=$(curl -fsN -H 'Content-Type: application/json' "$@" -d "$body" "$url")
  printf '%s SSE events, %s content deltas' \
    "$(grep -c '^data:' <<<"$answer")" \
    "$(grep -c -e '"content":"[^"]' -e '"type":"content_block_delta"' <<<"$answer")"
}
commas() { python3 -c "print(f'{$1:,}')"; }
label() { printf '%s\t%s\n' "$1" "$2" >>"$LABELS"; }
label conns "$CONNS"

echo "== machine: $(nproc) cores, $(uname -r); aiproxy $("$BIN" --version); $(nginx -v 2>&1);" \
     "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(oha --version); open files $(ulimit -n)"

# ---- WebSocket --------------------------------------------------------------
# 10,000 connections held open on one aiproxy serving the mock provider
# (cache off), 1,000 requests/s spread over them, then the same requests
# at the same rate over HTTP keep-alive connections to the same process,
# then throughput over 64 WebSockets against 64 HTTP keep-alive
# connections. examples/ws_bench.rs is the load generator (one thread,
# non-blocking sockets, bounded); it reads aiproxy's RSS from /proc.
if has ws; then
  conns=${WS_CONNECTIONS:-10000}
  start --model-provider mock --cache-enabled=false --api-key bench \
        --websocket-max-connections "$conns" --max-connections $((conns + 1000))
  printf '\n'
  "$WS_BENCH" "127.0.0.1:$PORT" bench "$PID" "$conns" "${WS_RATE:-1000}" "${WS_SECONDS:-20}" \
              64 "${WS_THROUGHPUT_SECONDS:-10}"
  stop "$PID"
fi

# ---- forwarding: nginx and aiproxy in front of the same mocks ---------------
# start_static NAME TYPE ANSWER: an nginx (one worker) answering every
# POST with ANSWER as TYPE and /v1/models with the mock's list; sets
# STATIC_PORT and STATIC_PIDS.
start_static() {
  local dir="$OUT/nginx-static-$1" type=$2 master answer=${3//\\/\\\\}
  answer=${answer//\'/\\\'}  # nginx unescapes \\ and \' in a quoted string
  mkdir -p "$dir/tmp"
  STATIC_PORT=$(free_port)
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/body;
  server {
    listen 127.0.0.1:$STATIC_PORT;
    location = /v1/models {
      default_type application/json;
      return 200 '{"object":"list","data":[{"id":"mock-small","object":"model","owned_by":"bench"}]}';
    }
    location / {
      default_type $type;
      return 200 '$answer';
    }
  }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log; daemon off;" &
  master=$!
  pids+=("$master")
  wait_ready "$STATIC_PORT" 100 /v1/models
  read -ra STATIC_PIDS <<<"$(with_children "$master")"
}

if has unary || has stream || has paced || has rates || has cache; then
  start --model-provider mock --cache-enabled=false
  UP_PORT=$PORT; UP_PID=$PID
  start --model-provider mock --cache-enabled=false --mock-chunk-delay 2ms
  PACED_PORT=$PORT
  # The streams without pacing come from STREAM_UPSTREAM: static, an nginx
  # replaying the mock's answer (one buffer per stream, a few µs of CPU),
  # or the mock itself, whose reader thread and chunk writes cost it more
  # CPU per stream than either proxy spends, so that it bounds the rate
  # of both and hides the ratio.
  STREAM_UP_PORT=$UP_PORT; STREAM_UP_PIDS=("$UP_PID")
  if [ "$STREAM_UPSTREAM" = static ]; then
    start_static stream text/event-stream \
      "$(curl -fsN -H 'Content-Type: application/json' -d "${OA_PRE}x$STREAM8_POST" \
              "http://127.0.0.1:$UP_PORT/v1/chat/completions")"
    STREAM_UP_PORT=$STATIC_PORT; STREAM_UP_PIDS=("${STATIC_PIDS[@]}")
  fi
  # Unary also from a static upstream, an nginx answering every request
  # with the mock's answer: the mock's own CPU per request, about a
  # proxy's, shares the cores with the proxy measured and dilutes the
  # ratio of the two proxies.
  UNARY_STATIC_PORT=""
  if has unary; then
    start_static unary application/json \
      "$(curl -fsS -H 'Content-Type: application/json' -d "${OA_PRE}x$UNARY_POST" \
              "http://127.0.0.1:$UP_PORT/v1/chat/completions")"
    UNARY_STATIC_PORT=$STATIC_PORT; UNARY_STATIC_PIDS=("${STATIC_PIDS[@]}")
  fi
  start_nginx forward 4096 "$UP_PORT" "$PACED_PORT" "$STREAM_UP_PORT" ${UNARY_STATIC_PORT:+"$UNARY_STATIC_PORT"}
  NG="http://127.0.0.1:${NGINX_PORTS[0]}"
  NG_PACED="http://127.0.0.1:${NGINX_PORTS[1]}"
  NG_STREAM="http://127.0.0.1:${NGINX_PORTS[2]}"
  start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
        --openai-base-url "http://127.0.0.1:$UP_PORT/v1"
  AI="http://127.0.0.1:$PORT"; AI_PID=$PID
  start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
        --openai-base-url "http://127.0.0.1:$PACED_PORT/v1"
  AI_PACED="http://127.0.0.1:$PORT"; AI_PACED_PID=$PID
  AI_STREAM=$AI; AI_STREAM_PID=$AI_PID
  if [ "$STREAM_UPSTREAM" = static ]; then
    start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
          --openai-base-url "http://127.0.0.1:$STREAM_UP_PORT/v1"
    AI_STREAM="http://127.0.0.1:$PORT"; AI_STREAM_PID=$PID
  fi
  if [ -n "$UNARY_STATIC_PORT" ]; then
    NG_STATIC="http://127.0.0.1:${NGINX_PORTS[3]}"
    start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
          --openai-base-url "http://127.0.0.1:$UNARY_STATIC_PORT/v1"
    AI_STATIC="http://127.0.0.1:$PORT"; AI_STATIC_PID=$PID
  fi
  echo "nginx: $NGINX_WORKERS workers (pids ${NGINX_PIDS[*]}); aiproxy idle RSS $(status_kib VmRSS "$AI_PID") KiB"
fi

if has unary; then
  label unary "unary, same protocol ($CONNS conns, distinct prompts)"
  label unary_anthropic "unary, Anthropic client → OpenAI upstream"
  label unary_static "unary, same protocol, static upstream (an nginx answering the mock's answer)"
  printf '\n== unary (wrk for req/s and CPU, oha for latency)\n'
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    [ "$round" -gt 1 ] || wrk_run unary direct "http://127.0.0.1:$UP_PORT/v1/chat/completions" openai "$UP_PID"
    UPSTREAM_PIDS=("$UP_PID")
    wrk_run unary nginx "$NG/v1/chat/completions" openai "${NGINX_PIDS[@]}"
    wrk_run unary aiproxy "$AI/v1/chat/completions" openai "$AI_PID"
    wrk_run unary_anthropic aiproxy "$AI/v1/messages" anthropic "$AI_PID"
    UPSTREAM_PIDS=("${UNARY_STATIC_PIDS[@]}")
    wrk_run unary_static nginx "$NG_STATIC/v1/chat/completions" openai "${NGINX_PIDS[@]}"
    wrk_run unary_static aiproxy "$AI_STATIC/v1/chat/completions" openai "$AI_STATIC_PID"
    UPSTREAM_PIDS=()
    oha_run unary nginx "$NG/v1/chat/completions" openai "" "${NGINX_PIDS[@]}"
    oha_run unary aiproxy "$AI/v1/chat/completions" openai "" "$AI_PID"
    oha_run unary_anthropic aiproxy "$AI/v1/messages" anthropic "" "$AI_PID"
  done
fi

if has stream; then
  body="${OA_PRE}x$STREAM8_POST"
  what="no pacing"
  [ "$STREAM_UPSTREAM" != static ] || what="no pacing, static upstream"
  events=$(sse_events "$AI_STREAM/v1/chat/completions" "$body")
  # Both proxies must relay the same stream, or the row compares nothing.
  if [ "$events" != "$(sse_events "$NG_STREAM/v1/chat/completions" "$body")" ]; then
    echo "the stream through aiproxy ($events) is not the stream through nginx" >&2
    exit 1
  fi
  label stream "stream, $events, $what"
  printf '\n== %s\n' "$(tail -1 "$LABELS" | cut -f2)"
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    [ "$round" -gt 1 ] || wrk_run stream direct "http://127.0.0.1:$STREAM_UP_PORT/v1/chat/completions" stream8 "${STREAM_UP_PIDS[@]}"
    wrk_run stream nginx "$NG_STREAM/v1/chat/completions" stream8 "${NGINX_PIDS[@]}"
    wrk_run stream aiproxy "$AI_STREAM/v1/chat/completions" stream8 "$AI_STREAM_PID"
  done
fi

if has paced; then
  label paced "stream, $(sse_events "$AI_PACED/v1/chat/completions" "${OA_PRE}x$PACED_POST") 2 ms apart, $CONNS at once (Anthropic client: $(sse_events "$AI_PACED/v1/messages" "${AN_STREAM_PRE}x$UNARY_POST" "${ANTHROPIC[@]}"))"
  printf '\n== %s\n' "$(tail -1 "$LABELS" | cut -f2)"
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    wrk_run paced nginx "$NG_PACED/v1/chat/completions" paced "${NGINX_PIDS[@]}"
    wrk_run paced aiproxy "$AI_PACED/v1/chat/completions" paced "$AI_PACED_PID"
    wrk_run paced_anthropic aiproxy "$AI_PACED/v1/messages" paced_anthropic "$AI_PACED_PID"
  done
fi

if has rates; then
  printf '\n== unary latency at fixed offered rates (oha -q, %s conns, latency corrected)\n' "$CONNS"
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    for rate in $RATES; do
      oha_run "rate$rate" nginx "$NG/v1/chat/completions" openai "-q $rate --latency-correction" "${NGINX_PIDS[@]}"
      oha_run "rate$rate" aiproxy "$AI/v1/chat/completions" openai "-q $rate --latency-correction" "$AI_PID"
    done
  done
fi

if has cache; then
  # The same request over and over, the cache on.
  start --model-provider openai-custom --openai-api-key bench \
        --openai-base-url "http://127.0.0.1:$UP_PORT/v1"
  CA="http://127.0.0.1:$PORT"; CA_PID=$PID
  printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' \
    "${OA_PRE}same$UNARY_POST" >"$OUT/same.lua"
  echo "${OA_PRE}same$UNARY_POST" >"$OUT/same.lines"
  label cache "cache hits (one request repeated, $CONNS conns)"
  printf '\n== %s\n' "$(tail -1 "$LABELS" | cut -f2)"
  for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    wrk_run cache aiproxy "$CA/v1/chat/completions" same "$CA_PID"
    oha_run cache aiproxy "$CA/v1/chat/completions" same "" "$CA_PID"
  done
  oha_run cache1000 aiproxy "$CA/v1/chat/completions" same "-q 1000 --latency-correction" "$CA_PID"
  curl -fs "$CA/cache/stats"; echo
  stop "$CA_PID"
fi

if [ -n "${AI_PID:-}" ]; then
  echo "aiproxy RSS after the load: $(status_kib VmRSS "$AI_PID") KiB (peak $(status_kib VmHWM "$AI_PID") KiB)"
  stop_nginx
  stop "$AI_PID" "$AI_PACED_PID" "$AI_STREAM_PID"
fi

# ---- requests in flight -----------------------------------------------------
# Each proxied request holds two descriptors in the proxy (client and
# upstream connection), so the open-files limit bounds how many can be in
# flight in one process.
if has inflight; then
  n=$IN_FLIGHT
  fits=$((($(ulimit -n) - 200) / 2))
  if [ "$fits" -lt "$n" ]; then
    echo "open-files limit $(ulimit -n) (hard $(ulimit -Hn)): $fits in flight instead of $n" >&2
    n=$fits
  fi
  total=$((n * IN_FLIGHT_ROUNDS))

  # inflight_run CASE SIDE URL WORKLOAD UPSTREAM_PORT LOG PID…: n clients
  # at once, each sending IN_FLIGHT_ROUNDS requests; records errors,
  # latency, the peak RSS and thread count of PID… (nginx: the sum of its
  # processes' peaks) and the most upstream connections open at once (a
  # fresh proxy opens one only when none is idle: the peak in flight).
  # When the proxy dies, the last error line of LOG is noted.
  inflight_run() {
    local case=$1 side=$2 url=$3 workload=$4 upstream=$5 log=$6 sampler threads conns rss log0
    shift 6
    log0=$(wc -c <"$log")
    rm -f "$OUT/stop-sampling"
    sample_peaks "$OUT/stop-sampling" "$upstream" "$@" >"$OUT/peaks" &
    sampler=$!
    pids+=("$sampler")
    timeout 600 oha --no-tui -c "$n" -n "$total" --connect-timeout 60s -t 120s -m POST \
        -H 'Content-Type: application/json' -Z "$OUT/$workload.lines" \
        --output-format json "$url" >"$OUT/oha.json" || true
    touch "$OUT/stop-sampling"
    wait "$sampler" || true
    read -r threads conns <"$OUT/peaks"
    if kill -0 "$1" 2>/dev/null; then
      rss=$(status_kib VmHWM "$@")
    else
      rss=-
      label "${case}_${side}_died" "$(tail -c +$((log0 + 1)) "$log" | grep -v 'panicked at' |
        grep -i -m1 -e fail -e error -e fatal | cut -c1-160)"
    fi
    "${REPORT[@]}" oha "$case" "$side" - - "$OUT/oha.json" "$rss" "$threads" "$conns"
  }

  label inflight_unary "$(commas "$n") requests, ${IN_FLIGHT_LATENCY} upstream"
  printf '\n== %s at once (%s request(s) each)\n' "$(tail -1 "$LABELS" | cut -f2)" "$IN_FLIGHT_ROUNDS"
  start --model-provider mock --cache-enabled=false --mock-latency "$IN_FLIGHT_LATENCY" \
        --workers $((n + 100)) --max-connections $((n + 100))
  SLOW_PORT=$PORT; SLOW_PID=$PID
  start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
        --openai-base-url "http://127.0.0.1:$SLOW_PORT/v1" --workers "$n" --max-connections $((n + 100))
  inflight_run inflight_unary aiproxy "http://127.0.0.1:$PORT/v1/chat/completions" openai \
               "$SLOW_PORT" "$OUT/aiproxy.log" "$PID"
  stop "$PID"
  start_nginx inflight $((2 * n + 1000)) "$SLOW_PORT"
  inflight_run inflight_unary nginx "http://127.0.0.1:${NGINX_PORTS[0]}/v1/chat/completions" openai \
               "$SLOW_PORT" "$OUT/nginx-inflight/error.log" "${NGINX_PIDS[@]}"
  stop_nginx
  stop "$SLOW_PID"

  label inflight_stream "$(commas "$n") streams, $SLOW_DELTAS deltas ${SLOW_DELAY} s apart"
  printf '\n== %s at once (%s stream(s) each)\n' "$(tail -1 "$LABELS" | cut -f2)" "$IN_FLIGHT_ROUNDS"
  SLOW_PORT=$(free_port)
  python3 tests/bench_sse_mock.py "$SLOW_PORT" "$SLOW_DELTAS" "$SLOW_DELAY" &
  SLOW_PID=$!
  pids+=("$SLOW_PID")
  wait_ready "$SLOW_PORT"
  workload slow_stream /v1/chat/completions "$OA_PRE" "$POST,\"stream\":true}"
  start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
        --openai-base-url "http://127.0.0.1:$SLOW_PORT/v1" --workers "$n" --max-connections $((n + 100))
  inflight_run inflight_stream aiproxy "http://127.0.0.1:$PORT/v1/chat/completions" slow_stream \
               "$SLOW_PORT" "$OUT/aiproxy.log" "$PID"
  stop "$PID"
  start_nginx inflight-stream $((2 * n + 1000)) "$SLOW_PORT"
  inflight_run inflight_stream nginx "http://127.0.0.1:${NGINX_PORTS[0]}/v1/chat/completions" slow_stream \
               "$SLOW_PORT" "$OUT/nginx-inflight-stream/error.log" "${NGINX_PIDS[@]}"
  stop_nginx
  stop "$SLOW_PID"
fi

[ -s "$RESULTS" ] || exit 0
printf '\n== README table (medians of %s rounds of %s; one run, compare rows of this run only)\n\n' "$ROUNDS" "$DURATION"
"${REPORT[@]}" table | tee "$OUT/table.md"
