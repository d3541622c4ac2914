# shellcheck shell=bash
# Shared by the benchmark scripts (tests/bench.sh, tests/bench_topologies.sh,
# tests/instructions.sh): processes they start are stopped by PID on exit.
pids=()
HANDED_OUT_PORTS=$(mktemp)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$HANDED_OUT_PORTS"
}
trap cleanup EXIT

# free_port: a port on 127.0.0.1 nobody listens on, never handed out
# before by this script (the kernel may offer a number again before the
# server meant for it binds it, as when nginx gets several at once). The
# numbers live in a file: free_port runs in $(...), a subshell.
free_port() {
  python3 - "$HANDED_OUT_PORTS" <<'EOF'
import socket, sys
path = sys.argv[1]
with open(path) as f:
    taken = set(f.read().split())
while True:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    if port not in taken:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
EOF
}

# wait_ready PORT [TRIES] [PATH]: polls PATH (/health) every 0.1 s (100 tries by default).
wait_ready() {
  for _ in $(seq 1 "${2:-100}"); do
    curl -fs "http://127.0.0.1:$1${3:-/health}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}

# start FLAGS…: the script's aiproxy ($BIN) on a free port, its log
# appended to $OUT/aiproxy.log; sets PORT and PID.
start() {
  PORT=$(free_port)
  "$BIN" --port "$PORT" --log-level warn "$@" 2>>"$OUT/aiproxy.log" &
  PID=$!
  pids+=("$PID")
  wait_ready "$PORT"
}

# stat_ticks AWK_EXPR PID…: AWK_EXPR over /proc/PID/stat summed over the
# processes (field 14 utime, 15 stime: clock ticks, their finished
# threads included).
stat_ticks() {
  local expr=$1 t=0 p
  shift
  for p in "$@"; do t=$((t + $(awk "{print $expr}" "/proc/$p/stat"))); done
  echo "$t"
}
# cpu_ticks PID…: user + system clock ticks of the processes.
cpu_ticks() { stat_ticks '$14 + $15' "$@"; }
# kernel_ticks PID…: the system part alone.
kernel_ticks() { stat_ticks '$15' "$@"; }

# with_children PID: PID and its child processes (nginx's master and workers).
with_children() { echo "$1 $(cat "/proc/$1/task/$1/children")"; }

# status_kib FIELD PID…: the sum of a /proc/PID/status field (VmRSS, VmHWM).
status_kib() {
  local field=$1 t=0 p; shift
  for p in "$@"; do t=$((t + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status"))); done
  echo "$t"
}

# sample_peaks STOPFILE PORT PID…: "THREADS CONNECTIONS", the highest sum
# of the processes' thread counts and the most established connections
# to 127.0.0.1:PORT, sampled every 0.2 s until STOPFILE exists or the
# first process is gone (at most 10 minutes).
sample_peaks() {
  local stop=$1 port=$2 threads=0 conns=0 now p files=()
  shift 2
  for p in "$@"; do files+=("/proc/$p/status"); done
  for _ in $(seq 1 3000); do
    if [ -e "$stop" ] || [ ! -e "/proc/$1" ]; then break; fi
    now=$(awk '$1 == "Threads:" {t += $2} END {print t + 0}' "${files[@]}" 2>/dev/null || true)
    [ "${now:-0}" -le "$threads" ] || threads=$now
    now=$(ss -Htn state established "( sport = :$port )" | wc -l)
    [ "$now" -le "$conns" ] || conns=$now
    sleep 0.2
  done
  echo "$threads $conns"
}
