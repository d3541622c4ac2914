#!/usr/bin/env bash
# Benchmark of topologies, on loopback, with wrk (64 connections):
#
#  1. the load balancer's cost: one proxy balancing over a pool of three
#     mock instances against one proxy with a single instance;
#  2. the cluster behind nginx: three clustered nodes against one node,
#     nginx (Debian's) in front of both with the same config.
#
# Every pair of rows is run alternately, ROUNDS times, fresh numbers each
# round: on a shared VM only rows of one run compare, and alternation
# spreads the machine's drift over both sides.
#
#   tests/bench_topologies.sh             # DURATION=5s ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
BIN=${AIPROXY_BIN:-target/release/aiproxy}
OUT=${BENCH_OUT:-tests/output/bench-topologies}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed (apt-get install nginx)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release

# shellcheck source=tests/bench_lib.sh
. tests/bench_lib.sh

BODY='{"model":"mock-small","messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
LUA="$OUT/post.lua"
printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["Content-Type"] = "application/json"\n' "$BODY" > "$LUA"

# Prints "req/s µs-of-CPU-per-request" of wrk against $1, CPU of pids $2…
measure() {
  local url=$1; shift
  local t0 t1 out rps total
  t0=$(cpu_ticks "$@")
  out=$(wrk -t2 -c64 -d"$DURATION" -s "$LUA" "$url")
  t1=$(cpu_ticks "$@")
  rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $(python3 -c "print(f'{($t1-$t0)*1e6/$(getconf CLK_TCK)/max($total,1):.1f}')")"
}
row() { printf '%-46s %10s %12s\n' "$@"; }

echo "== machine: $(nproc) cores; aiproxy $("$BIN" --version)"

# ---- 1. balancing over three instances against one ----------------------
ups=()
for _ in 1 2 3; do
  start --model-provider mock --cache-enabled=false --workers 64
  ups+=("$PORT")
done
pools() {  # pools FILE PORT…: an openai-custom pool, one member per port
  python3 - "$@" <<'EOF'
import json, sys
path, ports = sys.argv[1], sys.argv[2:]
members = [{"uuid": f"m{i}", "OPENAI_BASE_URL": f"http://127.0.0.1:{p}/v1", "OPENAI_API_KEY": "bench"}
           for i, p in enumerate(ports)]
json.dump({"openai-custom": members}, open(path, "w"))
EOF
}
pools "$OUT/pools-3.json" "${ups[@]}"
# Three members on one upstream process: the balancer's own cost, without
# three upstream processes competing for the same cores.
pools "$OUT/pools-1.json" "${ups[0]}" "${ups[0]}" "${ups[0]}"
start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
      --openai-base-url "http://127.0.0.1:${ups[0]}/v1"
ONE_PORT=$PORT; ONE_PID=$PID
start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
      --openai-base-url "http://127.0.0.1:${ups[0]}/v1" --provider-pools-file "$OUT/pools-3.json"
POOL_PORT=$PORT; POOL_PID=$PID
start --model-provider openai-custom --openai-api-key bench --cache-enabled=false \
      --openai-base-url "http://127.0.0.1:${ups[0]}/v1" --provider-pools-file "$OUT/pools-1.json"
SAME_PORT=$PORT; SAME_PID=$PID
printf '\n'; row "balancer, 64 conns (alternating)" "req/s" "µs CPU/req"
for round in $(seq 1 "$ROUNDS"); do
  read -r rps cpu < <(measure "http://127.0.0.1:$ONE_PORT/v1/chat/completions" "$ONE_PID")
  row "one instance (round $round)" "$rps" "$cpu"
  read -r rps cpu < <(measure "http://127.0.0.1:$SAME_PORT/v1/chat/completions" "$SAME_PID")
  row "three instances, one upstream (round $round)" "$rps" "$cpu"
  read -r rps cpu < <(measure "http://127.0.0.1:$POOL_PORT/v1/chat/completions" "$POOL_PID")
  row "three instances, three upstreams (round $round)" "$rps" "$cpu"
done
curl -fs "http://127.0.0.1:$POOL_PORT/loadbalancer/metrics" | python3 -c \
  'import json,sys; m=json.load(sys.stdin); print("selections:", m.get("selections"))'

# ---- 2. three clustered nodes behind nginx against one --------------------
nodes=(); node_pids=()
seed=""
for i in 1 2 3; do
  start --model-provider mock --cache-enabled=false --cluster-enabled \
        --node-id "node$i" ${seed:+--seed-nodes "$seed"}
  nodes+=("$PORT"); node_pids+=("$PID")
  seed="127.0.0.1:${nodes[0]}"
done
nginx_conf() {  # nginx_conf NAME LISTEN PORT…: the shipped config, upstreams substituted
  local dir="$OUT/nginx-$1" listen=$2; shift 2
  mkdir -p "$dir/logs"
  python3 - "$dir/nginx.conf" "$listen" "$@" <<'EOF'
import re, sys
out, listen, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
conf = open("packaging/compose/nginx.conf").read()
servers = "".join(f"        server 127.0.0.1:{p} max_fails=2 fail_timeout=10s;\n" for p in ports)
conf = re.sub(r"(upstream aiproxy \{\n)(?:\s*server [^\n]*\n)+", lambda m: m.group(1) + servers, conf)
conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen};")
conf = re.sub(r"access_log [^;]*;", "access_log off;", conf)
open(out, "w").write(conf)
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid; error_log $dir/error.log; daemon off;" &
  pids+=("$!")
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$listen/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nginx on $listen did not come up" >&2; exit 1
}
N1=$(free_port); nginx_conf one "$N1" "${nodes[0]}"
N3=$(free_port); nginx_conf three "$N3" "${nodes[@]}"
printf '\n'; row "behind nginx, 64 conns (alternating)" "req/s" "µs CPU/req"
for round in $(seq 1 "$ROUNDS"); do
  read -r rps cpu < <(measure "http://127.0.0.1:$N1/v1/chat/completions" "${node_pids[0]}")
  row "one node (round $round)" "$rps" "$cpu"
  read -r rps cpu < <(measure "http://127.0.0.1:$N3/v1/chat/completions" "${node_pids[@]}")
  row "three clustered nodes (round $round)" "$rps" "$cpu"
done
