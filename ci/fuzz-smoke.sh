#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS seconds each, one after the
# other, and fails if any target crashes, fails a check, hangs or leaks past its limits.
#
#   ci/fuzz-smoke.sh                 # every target, 30 s each
#   FUZZ_SECONDS=60 ci/fuzz-smoke.sh segment_file writer_model
#
# Needs the nightly toolchain (FUZZ_TOOLCHAIN, default nightly); installs cargo-fuzz when
# missing. Seeds fuzz/corpus/<target>/ from real segments first (the fuzz-seeds binary).
# A crash leaves its input in fuzz/artifacts/<target>/; minimise it with
#   cargo +nightly fuzz tmin -s none <target> fuzz/artifacts/<target>/crash-...
# and keep the result in fuzz/regressions/<target>/ (cargo test replays it).
#
# Settings (environment):
#   FUZZ_SECONDS    seconds per target (default 30)
#   FUZZ_SANITIZER  cargo fuzz sanitizer (default none: the code under test is safe Rust
#                   except layout::view, whose memory is mmaps a sanitizer does not track;
#                   overflow checks and debug assertions stay on). `address` works too,
#                   at a fifth of the speed.
#   FUZZ_NICE       niceness of the fuzzing processes (default 0)
#   FUZZ_REPORT     if set, a Markdown table of the runs is appended to this file
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
niceness=${FUZZ_NICE:-0}
step() { printf '\n==> %s\n' "$*"; }
# cargo fuzz keeps its build in fuzz/target (a CARGO_TARGET_DIR would mix its sanitizer
# flags into the workspace's build).
fuzz() { env -u CARGO_TARGET_DIR nice -n "$niceness" cargo +"$toolchain" fuzz "$@"; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

step "cargo-fuzz"
if ! fuzz --version >/dev/null 2>&1; then
  cargo +"$toolchain" install cargo-fuzz --locked
fi
fuzz --version

step "seed corpora (fuzz/corpus)"
cargo run --quiet --locked -p shmetrics-fuzz-checks --bin fuzz-seeds -- fuzz/corpus

step "build the targets (sanitizer: $sanitizer)"
# cargo fuzz has no --locked: check first that fuzz/Cargo.lock needs no change, so that the
# build cannot rewrite the committed file.
cargo metadata --locked --quiet --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null || {
  echo "fuzz/Cargo.lock is out of date: run 'cargo metadata --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null' and commit it" >&2
  exit 1
}
fuzz build -s "$sanitizer"

failed=()
rows=()
for target in "${targets[@]}"; do
  step "$target: ${seconds}s"
  log=$(mktemp)
  status=0
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or a blow-up.
  fuzz run -s "$sanitizer" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs' "$log" || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$final")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\) .*/\1/p' <<<"$final")
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" | cut -c1-300
    echo "FAILED: $target (exit $status); input in fuzz/artifacts/$target/"
    failed+=("$target")
    result="FAILED (exit $status)"
  else
    result="no failure"
  fi
  rows+=("| \`$target\` | ${seconds} s | ${execs:-?} | ${cov:-?} | ${corp:-?} | $result |")
  rm -f "$log"
done

step "summary"
{
  echo "| target | duration | executions | coverage (edges) | corpus (inputs/size) | result |"
  echo "|---|---:|---:|---:|---:|---|"
  printf '%s\n' "${rows[@]}"
} | tee -a "${FUZZ_REPORT:-/dev/null}"

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#targets[@]} fuzz targets ran ${seconds}s without a failure"
