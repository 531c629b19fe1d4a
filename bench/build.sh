# Sourced by bench/run.sh and bench/load.sh: builds the release binaries once and exports
# LARDER_BIN, BASELINE_BIN and BASELINE_PG_BIN. Set BENCH_SKIP_BUILD=1 to use them as they are.

target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

build_release_binaries() {
    if ! command -v wrk >/dev/null; then
        echo "bench: wrk is missing (apt-get install wrk)" >&2
        exit 1
    fi
    if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
        echo "bench: cargo build --release --bin larder --example baseline --example baseline_pg" >&2
        cargo build --release --quiet --bin larder --example baseline --example baseline_pg
    fi
    local target
    target="$(target_dir)"
    export LARDER_BIN="$target/release/larder"
    export BASELINE_BIN="$target/release/examples/baseline"
    export BASELINE_PG_BIN="$target/release/examples/baseline_pg"
}
