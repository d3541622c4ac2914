#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike CPU
# time on a shared VM, the count is the same from run to run whatever else
# the machine does, so it can compare two builds.
#
#   tests/instructions.sh                      # target/release/aiproxy
#   tests/instructions.sh old/aiproxy new/aiproxy   # side by side
#
# For each binary: aiproxy forwards N small OpenAI chat completions (one
# keep-alive connection) to a mock upstream (aiproxy serving the built-in
# mock provider, outside valgrind), then N streamed ones; the count of a
# run with no requests is subtracted, so startup and shutdown do not count.
# Prints user-space instructions per forwarded request and per stream.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
BINS=("$@")
[ "${#BINS[@]}" -gt 0 ] || BINS=(target/release/aiproxy)
OUT=${BENCH_OUT:-tests/output/instructions}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

# shellcheck source=tests/bench_lib.sh
. tests/bench_lib.sh

# Sends $2 requests (stream: $3) on one keep-alive connection to port $1.
drive() {
  python3 - "$1" "$2" "$3" <<'EOF'
import http.client, json, sys
port, n, stream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    body = {"model": "mock-small", "messages": [{"role": "user", "content": f"count {i}"}]}
    if stream:
        body["stream"] = True
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
}

UP=$(free_port)
"${BINS[0]}" --port "$UP" --model-provider mock --cache-enabled=false --log-level warn 2>/dev/null &
pids+=("$!")
wait_ready "$UP" 600

# Total instructions of one proxy run serving $2 requests (stream: $3).
count() {
  local bin=$1 n=$2 stream=$3 port
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
    "$bin" --port "$port" --model-provider openai-custom --openai-api-key k \
    --openai-base-url "http://127.0.0.1:$UP/v1" --cache-enabled=false --log-level warn \
    2>"$OUT/valgrind.log" &
  local pid=$!
  wait_ready "$port" 600
  [ "$n" -eq 0 ] || drive "$port" "$n" "$stream"
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$OUT/cg.$pid"
  rm -f "$OUT/cg.$pid"
}

printf '%-40s %14s %14s\n' binary "per request" "per stream"
for bin in "${BINS[@]}"; do
  base=$(count "$bin" 0 0)
  unary=$(count "$bin" "$N" 0)
  streamed=$(count "$bin" "$N" 1)
  printf '%-40s %14d %14d\n' "$bin" $(( (unary - base) / N )) $(( (streamed - base) / N ))
done
