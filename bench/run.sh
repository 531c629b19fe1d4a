#!/usr/bin/env bash
# The load benchmark: builds the release binaries (larder and the baseline), then runs
# bench/bench.py, which prints the table. See bench/README.md.
#
#   bench/run.sh              10 s per server per route, 64 connections, 100k-item import
#   bench/run.sh --smoke      2 s runs and a 10k-item import: checks the run works (CI)
#   bench/run.sh --duration 30 --json /tmp/bench.json
#   bench/run.sh --backend postgres   larder on the local PostgreSQL and Redis against a
#                             tokio-postgres baseline (bench/baseline_pg), 150k-item import
#   bench/run.sh --listing    filtered, sorted pages over 1,000,000 items at 64 connections,
#                             and larder's RSS while exporting them (issue 20)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/build.sh
source bench/build.sh
build_release_binaries
if [[ "${1:-}" == "--listing" ]]; then
    shift
    exec python3 bench/bench.py listing "$@"
fi
exec python3 bench/bench.py bench "$@"
