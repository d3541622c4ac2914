#!/usr/bin/env bash
# The project's test command: everything CI checks, in one run.
#
#   tests/run.sh              # full run
#   tests/run.sh -k openai    # extra arguments go to pytest
#
# Idempotent on a fresh Debian 12 machine with a rustup toolchain: installs
# only what is missing (apt-get update only when something must be
# installed), keeps the Python virtualenv in .venv and reinstalls its
# requirements only when tests/python/requirements.txt changes.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
# Exact pins first; the observability tests' own list (ranges) is honoured too.
REQUIREMENTS=("$ROOT/tests/python/requirements.txt")
if [ -f "$ROOT/tests/python/requirements-observability.txt" ]; then
    REQUIREMENTS+=("$ROOT/tests/python/requirements-observability.txt")
fi

# Each step prints the minutes and seconds since the start, so a slow CI run
# shows where its time went.
step() { printf '\n==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# ---- system packages ---------------------------------------------------------
missing=()
need() {  # need PACKAGE: queue PACKAGE unless dpkg already has it
    dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1")
}
command -v mandoc >/dev/null 2>&1 || need mandoc          # man page lint
command -v groff >/dev/null 2>&1 || need groff            # man page warnings
command -v python3 >/dev/null 2>&1 || need python3
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need python3-venv                                    # Debian splits venv/ensurepip out
fi
command -v redis-server >/dev/null 2>&1 || need redis-server  # cargo test: Redis cache tier
command -v promtool >/dev/null 2>&1 || need prometheus          # test_metrics.py: promtool
command -v chromium >/dev/null 2>&1 || need chromium            # test_dashboard.py: headless
command -v lintian >/dev/null 2>&1 || need lintian              # tests/package.sh: the .deb
command -v xz >/dev/null 2>&1 || need xz-utils                  # tests/package.sh: cargo-deb's compressor
command -v docker-compose >/dev/null 2>&1 || need docker-compose  # tests/deploy_check.sh
command -v nginx >/dev/null 2>&1 || need nginx                    # tests/deploy_check.sh
command -v npm >/dev/null 2>&1 || need npm                      # test_codex.py: Codex CLI
command -v curl >/dev/null 2>&1 || need curl                    # tests/static_binary.sh
command -v file >/dev/null 2>&1 || need file                    # tests/static_binary.sh
if [ "$(uname -m)" = x86_64 ]; then
    command -v musl-gcc >/dev/null 2>&1 || need musl-tools      # the static binary (ring's C)
fi
# Later stages: add further tools here with the same checks.
if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup first"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "rustup component add $component"
        rustup component add "$component"
    fi
done
# The static binary's target; where it cannot be installed,
# tests/static_binary.sh builds for the host instead.
MUSL=x86_64-unknown-linux-musl
if [ "$(uname -m)" = x86_64 ] && ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
    step "rustup target add $MUSL"
    rustup target add "$MUSL" || echo "tests/run.sh: no $MUSL target; host builds instead" >&2
fi

# ---- Python virtualenv for the SDK tests ---------------------------------------
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then   # missing or broken
    step "python3 -m venv .venv"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    step "pip install ${REQUIREMENTS[*]#"$ROOT/"}"
    pip_args=()
    for file in "${REQUIREMENTS[@]}"; do
        pip_args+=(-r "$file")
    done
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${pip_args[@]}"
    echo "$want" >"$stamp"
fi

# ---- Codex CLI for test_codex.py (pinned by tests/agents/codex/package-lock.json) ---
codex_dir="$ROOT/tests/agents/codex"
codex_stamp="$codex_dir/node_modules/.package-lock.sha256"
codex_lock=$(sha256sum "$codex_dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$codex_stamp" 2>/dev/null || true)" != "$codex_lock" ]; then
    step "npm ci in tests/agents/codex"
    (cd "$codex_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$codex_lock" >"$codex_stamp"
fi

# ---- Rust ------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo build --release"
cargo build --release --locked

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo doc: every public item documented, every link resolves"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked

# The release-test profile: optimised, without the release build's LTO,
# which cost each of the dozen test binaries its own 25 s link.
step "cargo test --profile release-test"
cargo test --profile release-test --locked

step "cargo clippy --no-default-features -- -D warnings (the minimal feature set)"
cargo clippy --no-default-features --locked -- -D warnings

step "static binary: musl builds with every feature and with none, smoke-tested"
tests/static_binary.sh

# ---- man page ------------------------------------------------------------------
if [ -f man/aiproxy.1 ]; then
    step "man page lint"
    lint=$(mandoc -T lint -W style man/aiproxy.1 2>&1 || true)
    [ -z "$lint" ] || die "mandoc -T lint -W style man/aiproxy.1:"$'\n'"$lint"
    warnings=$(groff -ww -z -man man/aiproxy.1 2>&1 >/dev/null || true)
    [ -z "$warnings" ] || die "groff -ww -z -man man/aiproxy.1:"$'\n'"$warnings"
fi

# ---- Debian package ----------------------------------------------------------------
step "Debian package: build, lintian, install, purge"
tests/package.sh

# ---- Prometheus alert rules and the Grafana dashboard's queries --------------------
step "promtool: rules, rule tests, Grafana queries"
"$VENV/bin/python" tests/promql_check.py

# ---- deployment files: Dockerfile, compose, nginx, Prometheus, Grafana -------------
step "deployment files: hadolint, docker-compose config, nginx -t, promtool"
VENV="$VENV" tests/deploy_check.sh

# ---- fuzzing smoke: a fixed number of inputs per target ----------------------------
# (cargo test above already replayed every corpus file and regression input.)
# Fixed seed and count, so a verdict here is reproducible; exploring for new
# findings is `SECONDS_PER_TARGET=600 fuzz/run.sh`, run outside CI.
step "fuzz smoke (${FUZZ_RUNS:-50000} inputs per target)"
RUNS_PER_TARGET="${FUZZ_RUNS:-50000}" fuzz/run.sh

# ---- coding agents for tests/python/test_agents.py ---------------------------------
# Claude Code and Gemini CLI at the versions pinned in tests/agents/package.json,
# installed into tests/agents/node_modules when missing or when the lock file
# changed. No package scripts run (npm 11 would skip them anyway, older npm
# would try to compile node-pty) except Claude Code's postinstall, which puts
# its native binary in place of the bin/claude.exe stub: run once here.
AGENTS="$ROOT/tests/agents"
command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 20 or later (Debian: nodejs npm)"
agents_stamp="$AGENTS/node_modules/.lock.sha256"
agents_want=$(sha256sum "$AGENTS/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$agents_stamp" 2>/dev/null || true)" != "$agents_want" ] \
    || ! "$AGENTS/node_modules/.bin/claude" --version >/dev/null 2>&1 \
    || ! "$AGENTS/node_modules/.bin/gemini" --version >/dev/null 2>&1; then
    step "npm ci in tests/agents (Claude Code, Gemini CLI)"
    (cd "$AGENTS" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    (cd "$AGENTS/node_modules/@anthropic-ai/claude-code" && node install.cjs)
    echo "$agents_want" >"$agents_stamp"
fi

# ---- end-to-end tests with the official SDKs -------------------------------------
step "pytest tests/python"
AIPROXY_BIN="$ROOT/target/release/aiproxy" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python "$@"

step "all checks passed"
