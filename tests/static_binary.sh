#!/usr/bin/env bash
# The static binary and the minimal feature set (README, "Static binary"):
# builds aiproxy fully static for x86_64-unknown-linux-musl, once with every
# feature and once with none (--no-default-features), checks that each is
# static, and smoke-tests each with the mock provider on a loopback port.
# Called by tests/run.sh, which installs the musl target and musl-tools;
# without them (another architecture, no rustup target) the same two builds
# are made for the host instead and only the static checks are skipped.
#
# Its own target directory, so target/release (the binary the Python tests
# run) is never replaced by a build with other features; both builds share
# its dependencies, the second only recompiles aiproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TARGET=x86_64-unknown-linux-musl
export CARGO_TARGET_DIR="$ROOT/target/static"
die() { printf 'tests/static_binary.sh: %s\n' "$*" >&2; exit 1; }

target_args=()
bin="$CARGO_TARGET_DIR/release/aiproxy"
if [ "$(uname -m)" = x86_64 ] && command -v musl-gcc >/dev/null 2>&1 \
    && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    target_args=(--target "$TARGET")
    bin="$CARGO_TARGET_DIR/$TARGET/release/aiproxy"
else
    echo "tests/static_binary.sh: no $TARGET target or musl-gcc: host builds, not static" >&2
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
pid=""
log=$(mktemp)
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# smoke FEATURES METRICS_STATUS: checks $bin: static, its --version, one mock
# chat completion, and the status of GET /metrics.
smoke() {
    local features=$1 metrics_status=$2 port answer status
    local size
    size=$(stat -c %s "$bin")
    if [ "${#target_args[@]}" -gt 0 ]; then
        file "$bin" | grep -q 'static-pie linked\|statically linked' \
            || die "not static: $(file "$bin")"
        ldd "$bin" 2>&1 | grep -q 'not a dynamic executable\|statically linked' \
            || die "ldd finds shared libraries: $(ldd "$bin" 2>&1)"
    fi
    [ "$("$bin" --version)" = "aiproxy $version (features: $features)" ] \
        || die "--version: $("$bin" --version)"
    port=$(free_port)
    "$bin" --model-provider mock --host 127.0.0.1 --port "$port" --log-level warn 2>"$log" &
    pid=$!
    for try in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || die "exited at start: $(cat "$log")"
        [ "$try" -lt 100 ] || die "not ready on port $port after 10 s: $(cat "$log")"
        sleep 0.1
    done
    answer=$(curl -s --max-time 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
        -d '{"model":"mock-small","messages":[{"role":"user","content":"static"}]}' \
        "http://127.0.0.1:$port/v1/chat/completions")
    [ "${answer##*$'\n'}" = 200 ] || die "chat completion: $answer"
    grep -q '"content":"Mock answer to \\"static\\"' <<<"$answer" || die "chat completion: $answer"
    status=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
    [ "$status" = "$metrics_status" ] || die "GET /metrics: $status, expected $metrics_status"
    kill "$pid"
    wait "$pid" || die "exit status $? after SIGTERM: $(cat "$log")"
    pid=""
    printf 'static binary (features: %s): %d bytes, smoke test passed\n' "$features" "$size" >&2
}

cargo build --release --locked "${target_args[@]}"
smoke "redis metrics websocket cluster dashboard" 200

cargo build --release --locked "${target_args[@]}" --no-default-features
smoke none 404
# A setting that needs a missing part stops the start (status 2), naming
# the feature; the timeout only bounds a binary that wrongly starts.
status=0
timeout 10 "$bin" --model-provider mock --port 0 --cluster-enabled true 2>"$log" || status=$?
[ "$status" = 2 ] || die "--cluster-enabled true without the cluster feature: status $status"
# shellcheck disable=SC2016  # the backquotes are the message's own
grep -qe '--cluster-enabled: this build has no `cluster` feature' "$log" \
    || die "--cluster-enabled true: $(cat "$log")"
