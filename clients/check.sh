#!/usr/bin/env bash
# The OpenAPI document as a new user meets it: from a running larder's /openapi.json,
#   1. `redocly lint` with the recommended rules: 0 errors;
#   2. docs/status-codes.md must be what clients/status_codes.py makes of the document;
#   3. openapi-python-client generates a client with no warning; the Python walk-through
#      passes mypy --strict and runs against the server;
#   4. openapi-typescript generates the types with no warning; the TypeScript walk-through
#      (openapi-fetch) compiles under tsc --strict and runs against the server.
# Builds nothing: it takes the release binary (argument, or LARDER_BIN, or
# $CARGO_TARGET_DIR/release/larder, or target/release/larder). The pinned tools are installed
# on first use: Python ones into CLIENTS_VENV (default .venv/clients, from
# clients/python/requirements.txt), npm ones into clients/typescript/node_modules (npm ci).
# Generated code goes to a temporary directory and clients/typescript/{generated,dist}
# (ignored by git). Needs python3 (3.11+), node (20.19+) and npm.
#
#   clients/check.sh [path/to/larder]
#   UPDATE_STATUS_CODES=1 clients/check.sh    rewrites docs/status-codes.md instead of checking it
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

export LARDER_BIN="${1:-${LARDER_BIN:-${CARGO_TARGET_DIR:-target}/release/larder}}"
[[ -x "$LARDER_BIN" ]] || { echo "clients: no larder binary at $LARDER_BIN (cargo build --release first)" >&2; exit 1; }
export LARDER_BUILD=0
# No telemetry or update check from the Redocly CLI.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1

step() { printf '\n---- clients: %s\n' "$*"; }

# ------------------------------------------------------------------ the pinned tools
venv="${CLIENTS_VENV:-.venv/clients}"
requirements="clients/python/requirements.txt"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$requirements" "$stamp"; then
    step "installing the Python tools into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi
ts="clients/typescript"
node_version="$(node --version 2>/dev/null || true)"
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null; then
    echo "clients: node 20.19 or later is needed (found: ${node_version:-none})" >&2
    exit 1
fi
if [[ ! -d "$ts/node_modules" ]] || ! cmp -s "$ts/package-lock.json" "$ts/node_modules/.larder-lock"; then
    step "npm ci in $ts (node $node_version)"
    (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$ts/package-lock.json" "$ts/node_modules/.larder-lock"
fi
bin_js="$root/$ts/node_modules/.bin"

# ------------------------------------------------------------------ the server and its document
source tests/serve.sh
work="$(mktemp -d -t larder-clients.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cleanup() {
    stop_larder
    rm -rf "$work"
}
admin_email="keeper@example.com"
admin_password="check-sh-admin-secret-1"
start_larder LARDER_ADMIN_EMAIL="$admin_email" LARDER_ADMIN_PASSWORD="$admin_password"
trap cleanup EXIT
curl -fsS -o "$work/openapi.json" "$LARDER_URL/openapi.json"
echo "clients: larder at $LARDER_URL; openapi.json is $(wc -c <"$work/openapi.json") bytes"

# Runs a generator and fails on any line it prints that is not one of its usual ones.
quiet_or_fail() {
    local usual="$1"
    shift
    local out rc=0
    out="$("$@" 2>&1)" || rc=$?
    printf '%s\n' "$out"
    if [[ $rc -ne 0 ]]; then
        echo "clients: FAILED (exit $rc): $*" >&2
        return 1
    fi
    local unusual
    unusual="$(printf '%s\n' "$out" | grep -Ev "$usual" | grep -Ev '^\s*$' || true)"
    if [[ -n "$unusual" ]]; then
        echo "clients: FAILED: the generator said more than usual (a warning?):" >&2
        printf '%s\n' "$unusual" >&2
        return 1
    fi
}

step "redocly lint (recommended rules): 0 errors"
lint_rc=0
# Pretty-printed, so that the line numbers in its report mean something.
python3 -m json.tool "$work/openapi.json" >"$work/openapi.pretty.json"
(cd "$work" && "$bin_js/redocly" lint --extends=recommended --format=stylish openapi.pretty.json) \
    >"$work/lint.txt" 2>&1 || lint_rc=$?
# Redocly CLI 2 announces the end of Node 20 support in a box; it is not about the document.
grep -v '[║╔╚]' "$work/lint.txt" | grep -v '^\s*$' || true
[[ $lint_rc -eq 0 ]] || { echo "clients: FAILED: redocly lint reports errors (exit $lint_rc)" >&2; exit 1; }

if [[ "${UPDATE_STATUS_CODES:-0}" == 1 ]]; then
    step "docs/status-codes.md: rewritten from the document (UPDATE_STATUS_CODES=1)"
    python3 clients/status_codes.py "$work/openapi.json" >docs/status-codes.md
else
    step "docs/status-codes.md is the document's"
    python3 clients/status_codes.py "$work/openapi.json" --check docs/status-codes.md
fi

step "openapi-python-client: generate (no warning)"
mkdir -p "$work/python"
# The generator formats its output with ruff, which it looks for on PATH.
(cd "$work" && export PATH="$root/$venv/bin:$PATH" && quiet_or_fail '^Generating ' \
    openapi-python-client generate --path openapi.json \
    --output-path python/larder_client --meta none --fail-on-warning)

step "python: every generated module imports"
# A module that does not import (openapi-python-client issue #1451) is only found this way.
PYTHONPATH="$work/python" "$venv/bin/python" -c '
import importlib, pkgutil, larder_client
names = [m.name for m in pkgutil.walk_packages(larder_client.__path__, "larder_client.")]
for name in names:
    importlib.import_module(name)
print(f"{len(names)} modules import")'

step "python walk-through: mypy --strict, then run"
# Errors inside the generated package are the generator's (its own code), not the document's:
# mypy reads it for types but reports only the walk-through.
MYPYPATH="$work/python" "$venv/bin/mypy" --strict --follow-imports=silent \
    --cache-dir "$work/mypy-cache" clients/python/walkthrough.py
PYTHONPATH="$work/python" "$venv/bin/python" clients/python/walkthrough.py \
    "$LARDER_URL" "$admin_email" "$admin_password"

step "openapi-typescript: generate (no warning)"
rm -rf "$ts/generated" "$ts/dist"
mkdir -p "$ts/generated"
quiet_or_fail '^✨ openapi-typescript |^🚀 ' \
    "$bin_js/openapi-typescript" "$work/openapi.json" -o "$ts/generated/schema.d.ts"

step "typescript walk-through: tsc --strict, then run"
"$bin_js/tsc" -p "$ts" --strict --noEmit
"$bin_js/tsc" -p "$ts"
node "$ts/dist/walkthrough.js" "$LARDER_URL" "$admin_email" "$admin_password"

if ! kill -0 "$LARDER_PID" 2>/dev/null; then
    echo "clients: the server died; its log:" >&2
    tail -50 "$LARDER_WORKDIR/larder.log" >&2
    exit 1
fi
echo
echo "clients: ok (redocly lint, status-codes.md, python and typescript clients)"
