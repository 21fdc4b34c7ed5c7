#!/usr/bin/env bash
# The Python package's tests: builds crates/shmetrics-python into the repository's venv
# (maturin develop, release profile) and runs its pytest suite. Run by ci/test.sh; also
# usable alone: bash ci/python-test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${SHMETRICS_VENV:-$root/.venv}

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  -r ci/requirements.txt -r ci/python-requirements.txt

# The extension module is built against the venv's interpreter and installed editable:
# python/shmetrics/ is imported from the source tree, the compiled module next to it.
(cd crates/shmetrics-python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
  maturin develop --release --quiet)

# A wheel too, for the test that installs it into a venv of its own (the `.pth` start-up
# hook of an installed wheel).
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
(cd crates/shmetrics-python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
  maturin build --release --quiet -o "$wheels" >/dev/null)
SHMETRICS_WHEEL=$(ls "$wheels"/shmetrics-*.whl) \
  "$venv/bin/python" -m pytest crates/shmetrics-python/tests -q -p no:cacheprovider "$@"
