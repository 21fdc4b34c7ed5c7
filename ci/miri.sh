#!/usr/bin/env bash
# Miri over the code that handles segment bytes without the OS: the layout crate (its unit
# tests, proptest included, and tests/buffers.rs, which builds and parses a whole segment
# image through the unsafe word view on a heap buffer), the reader's rendering tests and its
# fold pool (threads over borrowed data, checked for data races).
# The reader's and writer's other tests need mmap, flock or fork, which Miri cannot run;
# they are covered by the fuzz targets and the ordinary test suite instead.
#
#   ci/miri.sh
#
# Needs the nightly toolchain (MIRI_TOOLCHAIN, default nightly); adds its miri and rust-src
# components when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
toolchain=${MIRI_TOOLCHAIN:-nightly}

step() { printf '\n==> %s\n' "$*"; }

step "miri components"
if ! cargo +"$toolchain" miri --version >/dev/null 2>&1; then
  rustup component add miri rust-src --toolchain "$toolchain"
fi
cargo +"$toolchain" miri --version
cargo +"$toolchain" miri setup

# Isolation off: proptest looks up its failure-persistence directory (getcwd), and reads
# PROPTEST_CASES from the environment; 32 cases keep the interpreted run short.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
export PROPTEST_CASES="${PROPTEST_CASES:-32}"

start=$(date +%s)
step "layout crate: unit tests and tests/buffers.rs"
cargo +"$toolchain" miri test --locked -p shmetrics-layout

step "reader: rendering (escaping, number formatting)"
cargo +"$toolchain" miri test --locked -p shmetrics-reader --lib render::

step "reader: the fold pool (threads, the job's erased lifetime, take-back, unwinding)"
cargo +"$toolchain" miri test --locked -p shmetrics-reader --lib fold_pool::

step "miri passed in $(($(date +%s) - start)) s"
