#!/usr/bin/env bash
# prometheus_client's own test suites against the shmetrics drop-in, for each tested release
# (0.20.0, 0.24.1 and 0.26.0 by default: the oldest the package declares, the newest LMCache
# 0.5.6 allows, the newest): for each, a venv of its own with that release, pytest and the
# shmetrics wheel, the release's sdist from the package registry (nothing of it is kept in
# the repository), then
#   - ci/upstream_harness.py: its test_multiprocess.py (for 0.26.0 the whole suite, with the
#     optional dependencies of its web-framework tests) plain, with the drop-in in one pytest
#     process, and with the drop-in one interpreter per test;
#   - shmetrics' own Python tests (the drop-in's and the equivalence tests) with that release.
# And an untested release (0.19.0) must refuse the drop-in with a clear message.
# Venvs, sdists and the wheel are cached under the repository's venv folder.
#
#   bash ci/upstream-prometheus-client.sh [VERSION...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${SHMETRICS_VENV:-$root/.venv}
cache=$venv/upstream
mkdir -p "$cache/sdist"
versions=${*:-0.20.0 0.24.1 0.26.0}
pip_quiet=(-q --disable-pip-version-check)

[ -x "$venv/bin/maturin" ] || { echo "run ci/python-test.sh first (it creates $venv)" >&2; exit 2; }
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
(cd crates/shmetrics-python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
  maturin build --release --quiet -o "$wheels" >/dev/null)
wheel=$(ls "$wheels"/shmetrics-*.whl)

# A venv with prometheus_client $1 and the wheel; extra packages after it.
release_venv() {
  local version=$1; shift
  local dir=$cache/pc-$version
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  # gunicorn: shmetrics' own tests run its command line (test_docs.py), pinned as there.
  "$dir/bin/python" -m pip install "${pip_quiet[@]}" "prometheus_client==$version" pytest==9.2.0 \
    "$(grep '^gunicorn==' ci/python-requirements.txt)" "$@" >&2
  "$dir/bin/python" -m pip install "${pip_quiet[@]}" --force-reinstall --no-deps "$wheel" >&2
  echo "$dir"
}

for version in $versions; do
  extra=() full=()
  if [ "$version" = 0.26.0 ]; then
    extra=(asgiref==3.13.0 aiohttp==3.14.5 twisted==26.10.0 django==5.2.19)
    full=(--full)
  fi
  dir=$(release_venv "$version" "${extra[@]}")
  src=$cache/sdist/prometheus_client-$version
  if [ ! -d "$src/tests" ]; then
    "$dir/bin/python" -m pip download "${pip_quiet[@]}" --no-binary :all: --no-deps \
      "prometheus-client==$version" -d "$cache/sdist"
    tar -xzf "$cache/sdist/prometheus_client-$version.tar.gz" -C "$cache/sdist"
  fi
  echo "==> prometheus_client $version: its own tests"
  (cd "$src" && "$dir/bin/python" "$root/ci/upstream_harness.py" tests --version "$version" "${full[@]}")
  echo "==> prometheus_client $version: shmetrics' Python tests"
  "$dir/bin/python" -m pytest crates/shmetrics-python/tests -q -p no:cacheprovider
done

echo "==> prometheus_client 0.19.0: refused with a clear message"
dir=$(release_venv 0.19.0)
out=$("$dir/bin/python" -c 'import shmetrics.prometheus_client' 2>&1 || true)
echo "$out" | grep -q "tested with prometheus_client 0.20 to 0.26, and 0.19.0 is installed" ||
  { echo "FAIL: importing the drop-in under 0.19.0 said: $out" >&2; exit 1; }
warning=$(SHMETRICS_PROMETHEUS_CLIENT=1 "$dir/bin/python" -c 'import prometheus_client' 2>&1)
echo "$warning" | grep -q "RuntimeWarning: SHMETRICS_PROMETHEUS_CLIENT is set but the drop-in cannot be installed" ||
  { echo "FAIL: the switch under 0.19.0 said: $warning" >&2; exit 1; }
echo "ok: $(echo "$out" | tail -1)"
