#!/usr/bin/env bash
# schemathesis against the release server's own /openapi.json: every check, every phase
# (examples, coverage, fuzzing, stateful), authenticated as a freshly registered user.
# Zero failures required. Installs the pinned schemathesis into a virtual environment
# (SCHEMATHESIS_VENV, default .venv/schemathesis, ignored by git).
#
#   tests/schemathesis.sh                      the CI run (bounded: SCHEMATHESIS_MAX_EXAMPLES=50)
#   SCHEMATHESIS_MAX_EXAMPLES=200 tests/schemathesis.sh --seed 42    a longer run; extra flags pass through
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/serve.sh

version="4.32.5"
venv="${SCHEMATHESIS_VENV:-.venv/schemathesis}"
if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$version"; then
    echo "schemathesis: installing schemathesis==$version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

start_larder
email="schemathesis-$RANDOM@example.com"
password="schemathesis-password-1"
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\",\"full_name\":\"Schemathesis\"}" "$LARDER_URL/users"
token="$(curl -fsS --data-urlencode "username=$email" --data-urlencode "password=$password" "$LARDER_URL/auth/token" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

report="${SCHEMATHESIS_REPORT_DIR:-target/schemathesis-report}"
mkdir -p "$report"
status=0
"$venv/bin/schemathesis" run "$LARDER_URL/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --request-timeout 10 \
    --workers "${SCHEMATHESIS_WORKERS:-2}" \
    --header "Authorization: Bearer $token" \
    --report junit,ndjson --report-dir "$report" \
    --no-color \
    "$@" || status=$?
if ! kill -0 "$LARDER_PID" 2>/dev/null; then
    echo "schemathesis: the server died during the run; its log:" >&2
    tail -50 "$LARDER_WORKDIR/larder.log" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "schemathesis: FAILED (exit $status); reports in $report; server log tail:" >&2
    tail -20 "$LARDER_WORKDIR/larder.log" >&2
fi
exit $status
