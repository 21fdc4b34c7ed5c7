#!/usr/bin/env bash
# The long fuzzing runs recorded in docs/reliability.md: every target (or those named) for
# FUZZ_SECONDS (default 600) each, one after the other, at the lowest CPU priority, with
# the table of executions, coverage and corpus size appended to FUZZ_REPORT (default
# fuzz/long-runs.md, which git ignores). Same settings as ci/fuzz-smoke.sh otherwise.
#
#   ci/fuzz-long.sh                          # 6 targets x 10 min
#   FUZZ_SECONDS=3600 ci/fuzz-long.sh writer_model
set -euo pipefail
cd "$(dirname "$0")/.."
report=${FUZZ_REPORT:-$PWD/fuzz/long-runs.md}
{
  echo
  echo "Long runs started $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs ($(uname -m)), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} >>"$report"
FUZZ_SECONDS=${FUZZ_SECONDS:-600} FUZZ_NICE=${FUZZ_NICE:-19} FUZZ_REPORT=$report \
  exec ci/fuzz-smoke.sh "$@"
