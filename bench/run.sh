#!/usr/bin/env bash
# The load benchmark: builds the release binaries (larder and the baseline), then runs
# bench/bench.py, which prints the table. See bench/README.md.
#
#   bench/run.sh              10 s per server per route, 64 connections, 100k-item import
#   bench/run.sh --smoke      2 s runs and a 10k-item import: checks the run works (CI)
#   bench/run.sh --duration 30 --json /tmp/bench.json
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/build.sh
source bench/build.sh
build_release_binaries
exec python3 bench/bench.py bench "$@"
