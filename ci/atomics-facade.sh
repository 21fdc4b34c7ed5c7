#!/usr/bin/env bash
# Every AtomicU64 goes through shmetrics_layout::sync (std's atomics, or loom's when the
# layout crate is built with --cfg loom): fails on std's AtomicU64 named anywhere else.
# (clippy's disallowed-types cannot say this: it sees the re-exported type as std's.)
set -euo pipefail
cd "$(dirname "$0")/.."
found=$(grep -rnE 'atomic::AtomicU64|atomic::\{[^}]*\bAtomicU64\b' --include='*.rs' crates benches fuzz/fuzz_targets |
  grep -v '^crates/shmetrics-layout/src/sync.rs:' || true)
if [ -n "$found" ]; then
  echo "std's AtomicU64 outside shmetrics_layout::sync (use shmetrics_layout::sync::AtomicU64):" >&2
  echo "$found" >&2
  exit 1
fi

# Every ordering is named by a SYNC POINT, and every SYNC POINT named in the code has its
# row in docs/concurrency.md (the publish/observe pairs).
missing=$(grep -rhoE 'SYNC POINT [a-z0-9-]+' --include='*.rs' crates benches | awk '{print $3}' | sort -u |
  while read -r name; do grep -q "\`$name\`" docs/concurrency.md || echo "$name"; done)
if [ -n "$missing" ]; then
  echo "SYNC POINTs without a row in docs/concurrency.md:" >&2
  echo "$missing" >&2
  exit 1
fi
