# Sourced by benches/run-*.sh: makes CARGO_TARGET_DIR and CRITERION_HOME absolute (cargo runs
# bench binaries from the package directory), moves to the repository root, and defines
# `criterion_dir`, where criterion writes its estimates: $CRITERION_HOME, else
# $CARGO_TARGET_DIR/criterion, else the workspace target directory's criterion/ (the order
# criterion itself uses).
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for var in CARGO_TARGET_DIR CRITERION_HOME; do
    if [[ -n "${!var:-}" && "${!var}" != /* ]]; then
        export "$var=$PWD/${!var}"
    fi
done
cd "$repo_root"

criterion_dir() {
    if [[ -n "${CRITERION_HOME:-}" ]]; then
        echo "$CRITERION_HOME"
    elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
        echo "$CARGO_TARGET_DIR/criterion"
    else
        echo "$(cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/criterion"
    fi
}
