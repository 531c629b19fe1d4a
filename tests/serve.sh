# Sourced by the scripts under tests/ that need a running release server (the docs
# screenshot, schemathesis). Starts `larder serve` from LARDER_BIN (default: the release
# binary of this checkout, built if missing) on a free port with a fresh SQLite database in
# a temporary directory, and stops it on exit.
#
#   source tests/serve.sh; start_larder [NAME=VALUE...]   ->   LARDER_URL, LARDER_PID, LARDER_WORKDIR
#
# NAME=VALUE arguments are added to the server's environment (e.g. LARDER_ADMIN_EMAIL=...).

larder_release_bin() {
    if [[ -n "${LARDER_BIN:-}" ]]; then
        echo "$LARDER_BIN"
        return
    fi
    local target
    target="$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    if [[ ! -x "$target/release/larder" || "${LARDER_BUILD:-1}" == 1 ]]; then
        cargo build --release --quiet --bin larder >&2
    fi
    echo "$target/release/larder"
}

stop_larder() {
    if [[ -n "${LARDER_PID:-}" ]] && kill -0 "$LARDER_PID" 2>/dev/null; then
        kill -TERM "$LARDER_PID" 2>/dev/null || true
        wait "$LARDER_PID" 2>/dev/null || true
    fi
    LARDER_PID=""
    if [[ -n "${LARDER_WORKDIR:-}" && "${KEEP_WORKDIR:-0}" != 1 ]]; then
        rm -rf "$LARDER_WORKDIR"
    fi
}

start_larder() {
    local bin port
    bin="$(larder_release_bin)"
    LARDER_WORKDIR="$(mktemp -d -t larder-test.XXXXXX)"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    trap stop_larder EXIT
    # A clean environment for the server: none of the caller's LARDER_* (no test hooks).
    env $(env | sed -n 's/^\(LARDER_[A-Z_]*\)=.*/-u \1/p') \
        LARDER_BIND="127.0.0.1:$port" \
        LARDER_DATABASE_URL="sqlite://$LARDER_WORKDIR/larder.db" \
        LARDER_LOG_LEVEL="${SERVE_LOG_LEVEL:-warn}" \
        "$@" \
        "$bin" serve >"$LARDER_WORKDIR/larder.log" 2>&1 </dev/null &
    LARDER_PID=$!
    LARDER_URL="http://127.0.0.1:$port"
    local i
    for i in $(seq 1 300); do
        if curl -fsS -o /dev/null "$LARDER_URL/healthz" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$LARDER_PID" 2>/dev/null; then
            echo "larder exited before answering; its log:" >&2
            cat "$LARDER_WORKDIR/larder.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "larder did not answer $LARDER_URL/healthz within 30 s; its log:" >&2
    cat "$LARDER_WORKDIR/larder.log" >&2
    return 1
}
