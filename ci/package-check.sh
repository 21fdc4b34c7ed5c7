#!/usr/bin/env bash
# Every publishable crate packages cleanly: `cargo package --list` prints no warning (license,
# description, documentation, readme) and the package holds both license files and the
# README. Lists files only: nothing is built or uploaded.
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(shmetrics-layout shmetrics-writer shmetrics-reader shmetrics-workload shmetrics shmetrics-metrics)
status=0
for crate in "${crates[@]}"; do
  out=$(cargo package --list --locked --allow-dirty -p "$crate" 2>&1) || {
    echo "$crate: cargo package --list failed:" >&2
    echo "$out" >&2
    status=1
    continue
  }
  if grep -q '^warning' <<<"$out"; then
    echo "$crate: cargo package warns:" >&2
    grep -A3 '^warning' <<<"$out" >&2
    status=1
  fi
  for file in LICENSE-MIT LICENSE-APACHE README.md Cargo.toml; do
    grep -qx "$file" <<<"$out" || { echo "$crate: the package lacks $file" >&2; status=1; }
  done
  echo "$crate: $(wc -l <<<"$out") files"
done
# Every crate of the workspace that is not in the list above must say it is not published.
for manifest in crates/*/Cargo.toml; do
  name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)
  if [[ " ${crates[*]} " != *" $name "* ]] && ! grep -q '^publish = false' "$manifest"; then
    echo "$name is neither checked here nor publish = false" >&2
    status=1
  fi
done
exit $status
