#!/usr/bin/env bash
# One million series in one writer, served with the default budgets: generates the
# directory on tmpfs, starts `serve`, scrapes it SCRAPES times plain and once gzip-encoded,
# and prints each scrape's size and time with serve's resident set (VmRSS, VmHWM).
# Figures in docs/reliability.md, "Never down: output amplification".
#
#   benches/run-million-series.sh [SCRAPES]     # default 8; needs curl
set -euo pipefail
cd "$(dirname "$0")/.."
scrapes=${1:-8}
command -v curl >/dev/null || { echo "needs curl" >&2; exit 2; }
cargo build --release --locked -q -p shmetrics
bin=target/release/shmetrics
dir=$(mktemp -d /dev/shm/shmetrics-million.XXXXXX)
port=${PORT:-9391}
body=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir" "$body"' EXIT
"$bin" generate --dir "$dir" --processes 1 --series 1000000 --ops 1
echo "$(ls "$dir" | wc -l) segments, $(du -sh "$dir" | cut -f1)"
"$bin" serve --dir "$dir" --listen "127.0.0.1:$port" 2>/dev/null &
pid=$!
sleep 1
memory() { grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \t\n' ' '; echo; }
for i in $(seq "$scrapes"); do
  curl -sS -o "$body" -w "scrape $i: %{http_code}, %{size_download} bytes in %{time_total} s; " \
    "http://127.0.0.1:$port/metrics"
  memory
done
curl -sS -o "$body" -H 'Accept-Encoding: gzip' \
  -w "gzip: %{http_code}, %{size_download} bytes in %{time_total} s; " "http://127.0.0.1:$port/metrics"
memory
