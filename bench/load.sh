#!/usr/bin/env bash
# The mixed load of issue 10: 1,000 keep-alive connections of reads, writes, logins,
# rate-limited calls and job submissions against a fresh larder; fails on any 5xx or
# connection error. See bench/README.md.
#
#   bench/load.sh                     the full run: 60 s, 1,000 connections
#   bench/load.sh --duration 10       the CI smoke
#   bench/load.sh --backend postgres --processes 2
#                                     through one process, then two side by side on one
#                                     PostgreSQL database (and Redis); every job ran once
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/build.sh
source bench/build.sh
build_release_binaries
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 bench/bench.py load "$@"
