#!/usr/bin/env bash
# README's test command: installs what the tests need, then runs every check and test.
# Runs as root on a fresh Debian machine (CI) or as a developer with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Tracked files as they are before the run: the run must leave them so (see the end).
tracked_state() { git status --porcelain --untracked-files=no; git diff HEAD | sha256sum; }
tracked_before=$(tracked_state)

step "system packages (promtool from Debian's prometheus, prometheus-pushgateway, victoria-metrics, systemd-analyze, strace)"
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || packages+=(prometheus-pushgateway)
command -v victoria-metrics >/dev/null 2>&1 || packages+=(victoria-metrics)
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v strace >/dev/null 2>&1 || packages+=(strace)
if [ ${#packages[@]} -gt 0 ]; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
promtool --version | head -1

step "python venv with prometheus_client (exposition parsers)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r ci/requirements.txt
export SHMETRICS_PYTHON="$root/.venv/bin/python"
export SHMETRICS_REQUIRE_VALIDATORS=1

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "module layering: no import circle inside a crate; atomics through the layout's facade; every SYNC POINT documented"
python3 ci/module-cycles.py crates/*/src
bash ci/atomics-facade.sh

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "packaging: every publishable crate packages with its licenses and README"
bash ci/package-check.sh

step "tests"
cargo test --workspace --locked

step "threaded tests (writer, metrics facade, the reader's spread and fork tests) on one core: none may count on two threads running at once"
one_cpu=$(python3 -c 'import os; print(min(os.sched_getaffinity(0)))')
taskset -c "$one_cpu" cargo test --locked -p shmetrics-writer -p shmetrics-metrics
taskset -c "$one_cpu" cargo test --locked -p shmetrics-reader --test striped --test multiprocess

step "deployment recipes: systemd unit, Containerfile, Kubernetes manifest (deploy/)"
.venv/bin/python ci/deploy-check.py "${CARGO_TARGET_DIR:-target}/debug/shmetrics"

step "python package: build into .venv, pytest"
bash ci/python-test.sh

step "prometheus_client's own tests against the drop-in (0.20.0, 0.24.1, 0.26.0)"
bash ci/upstream-prometheus-client.sh

step "loom: models of the publish protocols"
bash ci/loom.sh

step "miri: the layout crate, the reader's rendering and its fold pool (nightly)"
bash ci/miri.sh

step "fuzz smoke: every cargo-fuzz target for 30 s (nightly)"
bash ci/fuzz-smoke.sh

step "benches compile and run once in test mode"
cargo test -p shmetrics-benches --benches --locked

step "the run left every tracked file as it found it"
if [ "$(tracked_state)" != "$tracked_before" ]; then
  echo "the test command changed tracked files:" >&2
  git status --short --untracked-files=no >&2
  git diff --stat HEAD >&2
  exit 1
fi

step "all checks passed"
