# Shared by the benchmark scripts (tests/bench.sh, tests/bench_topologies.sh,
# tests/instructions.sh): processes they start are stopped by PID on exit.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_ready PORT [TRIES]: polls /health every 0.1 s (100 tries by default).
wait_ready() {
  for _ in $(seq 1 "${2:-100}"); do
    curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}
