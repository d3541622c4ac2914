#!/usr/bin/env bash
# Counts per forwarded request (same protocol, and converted: an Anthropic
# client to the OpenAI upstream), per stream and per streamed event:
# user-space instructions (valgrind's callgrind), heap allocations
# (valgrind's DHAT: every malloc, the crate forbids the unsafe code a
# counting #[global_allocator] would need) and system calls (strace -c -f).
# Unlike CPU time on a shared VM, these are the same from run to run
# whatever else the machine does, so they can compare two builds.
#
#   tests/instructions.sh                           # target/release/aiproxy
#   tests/instructions.sh old/aiproxy new/aiproxy   # side by side
#   N=500 STREAMS=100 N_STRACE=0 tests/instructions.sh   # quicker
#
# For each binary and each counter: aiproxy forwards small OpenAI chat
# completions, one after the other on one keep-alive connection, to a mock
# upstream (aiproxy serving the built-in mock provider, outside valgrind
# and strace); then as many Anthropic messages to the same upstream
# (converted there and back); then STREAMS streamed ones of 16 content deltas, then as
# many of 2, from a mock that spaces the events PACE apart as a model does
# (without pauses the events coalesce in the socket buffers as timing
# allows, and the counts would move between runs); then the same two
# streams to an Anthropic client (converted event by event). The count of
# a run with no requests is subtracted, so startup and shutdown do not
# count; per event is the difference between the two stream lengths
# divided by the difference in events.
# Knobs: N (2000 unary requests under callgrind), N_DHAT (1000 under
# DHAT), N_STRACE (300 under strace; 0 skips strace), STREAMS (300 for
# each), PACE (2ms).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2000}
N_DHAT=${N_DHAT:-1000}
N_STRACE=${N_STRACE:-300}
STREAMS=${STREAMS:-300}
PACE=${PACE:-2ms}
BINS=("$@")
[ "${#BINS[@]}" -gt 0 ] || BINS=("${CARGO_TARGET_DIR:-target}/release/aiproxy")
OUT=${BENCH_OUT:-tests/output/instructions}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
[ "$N_STRACE" -eq 0 ] || command -v strace >/dev/null ||
  { echo "strace is needed (apt-get install strace), or N_STRACE=0" >&2; exit 1; }

# shellcheck source=tests/bench_lib.sh
. tests/bench_lib.sh

# drive PORT COUNT KIND: COUNT requests on one keep-alive connection;
# KIND unary, converted (unary from an Anthropic client, so converted both
# ways), stream (16 content deltas) or short (a stream of 2), and
# converted_stream and converted_short (those streams to an Anthropic
# client). Prints the SSE events of the last answer (0 for unary).
drive() {
  python3 - "$@" <<'EOF'
import http.client, json, sys
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port)
events = 0
for i in range(n):
    body = {"model": "mock-small", "messages": [{"role": "user", "content": f"count {i}"}]}
    path, headers = "/v1/chat/completions", {"Content-Type": "application/json"}
    if kind.startswith("converted"):
        body["max_tokens"] = 256
        path = "/v1/messages"
        headers["anthropic-version"] = "2023-06-01"
    if kind not in ("unary", "converted"):
        body["stream"] = True
    if kind.endswith("short"):
        body["max_tokens"] = 2
    conn.request("POST", path, json.dumps(body), headers)
    r = conn.getresponse()
    answer = r.read()
    assert r.status == 200, (r.status, answer[:200])
    events = answer.count(b"\ndata:") + answer.startswith(b"data:")
print(events)
EOF
}

UP=$(free_port)
"${BINS[0]}" --port "$UP" --model-provider mock --cache-enabled=false --log-level warn 2>/dev/null &
pids+=("$!")
PACED=$(free_port)
"${BINS[0]}" --port "$PACED" --model-provider mock --cache-enabled=false --log-level warn \
  --mock-chunk-delay "$PACE" 2>/dev/null &
pids+=("$!")
wait_ready "$UP" 600
wait_ready "$PACED" 600

# run TOOL BIN COUNT KIND: serves COUNT requests of KIND under TOOL
# (callgrind, dhat or strace); prints "TOTAL EVENTS", TOTAL being the
# instructions, the heap blocks allocated or the system calls made.
run() {
  local tool=$1 bin=$2 n=$3 kind=$4 port pid child events=0 total upstream=$UP
  port=$(free_port)
  case $kind in unary | converted) ;; *) upstream=$PACED ;; esac
  local flags=(--port "$port" --model-provider openai-custom --openai-api-key k
               --openai-base-url "http://127.0.0.1:$upstream/v1" --cache-enabled=false --log-level warn)
  case $tool in
    callgrind) valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$bin" "${flags[@]}" \
                 2>"$OUT/valgrind.log" & pid=$! ;;
    dhat) valgrind --tool=dhat --dhat-out-file="$OUT/dhat.json" "$bin" "${flags[@]}" \
            2>"$OUT/valgrind.log" & pid=$! ;;
    strace) strace -f -c -o "$OUT/strace.out" "$bin" "${flags[@]}" 2>/dev/null &
            pid=$! ;;
  esac
  wait_ready "$port" 600
  # strace's child is aiproxy: it is the one to stop, so that it drains.
  child=$pid
  [ "$tool" != strace ] || read -r _ child <<<"$(with_children "$pid")"
  [ "$n" -eq 0 ] || events=$(drive "$port" "$n" "$kind")
  kill -TERM "$child"
  wait "$pid" || true
  case $tool in
    callgrind) total=$(awk '/^summary:/ {print $2}' "$OUT/cg.out") ;;
    dhat) total=$(awk '/Total:/ {gsub(",", "", $(NF-1)); print $(NF-1)}' "$OUT/valgrind.log") ;;
    strace) total=$(awk '$NF == "total" {print $4}' "$OUT/strace.out")
            cp "$OUT/strace.out" "$OUT/strace-$kind-$n.out" ;;
  esac
  echo "$total $events"
}

# counts TOOL BIN REQUESTS: "PER_REQUEST PER_STREAM PER_EVENT EVENTS
# PER_CONVERTED_REQUEST PER_CONVERTED_STREAM PER_CONVERTED_EVENT" for BIN.
counts() {
  local tool=$1 bin=$2 n=$3 base unary converted stream short long_events short_events
  local cstream cshort clong_events cshort_events
  read -r base _ < <(run "$tool" "$bin" 0 unary)
  read -r unary _ < <(run "$tool" "$bin" "$n" unary)
  read -r converted _ < <(run "$tool" "$bin" "$n" converted)
  read -r stream long_events < <(run "$tool" "$bin" "$STREAMS" stream)
  read -r short short_events < <(run "$tool" "$bin" "$STREAMS" short)
  read -r cstream clong_events < <(run "$tool" "$bin" "$STREAMS" converted_stream)
  read -r cshort cshort_events < <(run "$tool" "$bin" "$STREAMS" converted_short)
  python3 -c "import sys
b, u, s, t, n, m, el, es, c, cs, ct, cel, ces = map(int, sys.argv[1:])
print(f'{(u - b) / n:.1f} {(s - b) / m:.1f} {(s - t) / m / (el - es):.1f} {el} {(c - b) / n:.1f}',
      f'{(cs - b) / m:.1f} {(cs - ct) / m / (cel - ces):.1f}')" \
    "$base" "$unary" "$stream" "$short" "$n" "$STREAMS" "$long_events" "$short_events" "$converted" \
    "$cstream" "$cshort" "$clong_events" "$cshort_events"
}

declare -A result
metrics=()
measure() {  # measure TOOL COUNT NAME: six rows of the table
  local tool=$1 n=$2 name=$3 bin r e s v c cs cv
  metrics+=("$name per request" "$name per converted request" "$name per stream"
            "$name per event" "$name per converted stream" "$name per converted event")
  for bin in "${BINS[@]}"; do
    read -r r s v e c cs cv < <(counts "$tool" "$bin" "$n")
    result["$name per request|$bin"]=$r
    result["$name per converted request|$bin"]=$c
    result["$name per stream|$bin"]=$s
    result["$name per event|$bin"]=$v
    result["$name per converted stream|$bin"]=$cs
    result["$name per converted event|$bin"]=$cv
    EVENTS=$e
  done
}
measure callgrind "$N" instructions
measure dhat "$N_DHAT" allocations
[ "$N_STRACE" -eq 0 ] || measure strace "$N_STRACE" "system calls"

printf '\n%-34s' "($EVENTS-event streams, $PACE)"
for bin in "${BINS[@]}"; do
  [ "${#bin}" -le 22 ] || bin=..${bin: -20}
  printf ' %22s' "$bin"
done
printf '\n'
for m in "${metrics[@]}"; do
  printf '%-34s' "$m"
  for bin in "${BINS[@]}"; do printf ' %22s' "${result["$m|$bin"]}"; done
  printf '\n'
done
if [ "$N_STRACE" -gt 0 ]; then
  # Which calls a stream makes, for the last binary.
  printf '\nsystem calls per stream by name (%s):\n' "${BINS[-1]}"
  python3 - "$OUT/strace-unary-0.out" "$OUT/strace-stream-$STREAMS.out" "$STREAMS" <<'EOF'
import sys
def calls(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            out[f[-1]] = int(f[3])
    return out
base, run, n = calls(sys.argv[1]), calls(sys.argv[2]), int(sys.argv[3])
per = sorted(((v - base.get(k, 0)) / n, k) for k, v in run.items())
print("  " + ", ".join(f"{k} {v:.1f}" for v, k in reversed(per) if v >= 0.05))
EOF
fi
