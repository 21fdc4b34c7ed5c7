#!/usr/bin/env bash
# The scaling bench (1-16 writers, a reader every 10 ms, against the raw-atomic limit of the
# same run) and the live-scrape comparison with prometheus_client, on a machine with more
# cores, from binaries built elsewhere: the 16-core machine of docs/performance.md has no
# Rust toolchain and no network. Figures in docs/performance.md, "Scaling across writer
# processes" and "On 16 cores".
#
#   cargo build --release --locked -p shmetrics --bin shmetrics
#   cargo build --profile bench --locked -p shmetrics-benches --bin scaling --bin scrape-client
#   mkdir -p BIN && cp target/release/{shmetrics,scaling,scrape-client} BIN/
#   benches/run-device.sh BIN OUT        # on that machine; needs python3 with prometheus_client
#
# QUICK=1 runs each part briefly (to check the script before spending the machine's time).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
if [ "${QUICK:-0}" = 1 ]; then
  scaling=(--writers 1,2 --duration-ms 100 --repeats 1)
  incumbent=(--cases 4:100 --serve-scrapes 20)
else
  scaling=(--writers 1,2,4,8,12,15,16 --duration-ms 1000 --repeats 5)
  incumbent=(--cases 128:1000 --serve-scrapes 200)
fi
{
  echo "cores: $(nproc); $(uname -sr)"
  grep -m1 'model name' /proc/cpuinfo
  python3 -c 'import sys, importlib.metadata as m; print("python", sys.version.split()[0], "prometheus_client", m.version("prometheus_client"))'
} | tee "$out/machine.txt"
echo "== scaling ${scaling[*]}"
timeout 300 "$bin/scaling" "${scaling[@]}" 2>&1 | tee "$out/scaling.txt"
echo "scaling exit ${PIPESTATUS[0]}"
echo "== incumbent ${incumbent[*]}"
PYTHONUNBUFFERED=1 timeout 270 python3 benches/compare/incumbent.py --parts scrape \
  "${incumbent[@]}" --python "$(command -v python3)" --shmetrics "$bin/shmetrics" \
  --scrape-client "$bin/scrape-client" --out "$out/incumbent.json" 2>&1 | tee "$out/incumbent.txt"
echo "incumbent exit ${PIPESTATUS[0]}"
