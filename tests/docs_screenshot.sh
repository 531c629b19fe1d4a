#!/usr/bin/env bash
# The interactive docs render offline: starts the release server with a fresh database,
# opens /docs/ in headless Chromium (Debian's `chromium`), saves a screenshot and checks the
# rendered DOM lists the operations. The machine's network is closed, so a page that needed
# a CDN would render empty here.
#
#   tests/docs_screenshot.sh [OUT.png]      (default: target/docs-screenshot.png)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/serve.sh

out="${1:-target/docs-screenshot.png}"
mkdir -p "$(dirname "$out")"
chromium_bin="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$chromium_bin" ]]; then
    echo "docs screenshot: chromium is not installed (apt-get install chromium)" >&2
    exit 1
fi

start_larder
profile="$(mktemp -d -t larder-chromium.XXXXXX)"
chromium() {
    "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$profile" --virtual-time-budget=10000 "$@" 2>>"$LARDER_WORKDIR/chromium.log"
}
chromium --window-size=1280,2000 --screenshot="$out" "$LARDER_URL/docs/" >/dev/null
dom="$LARDER_WORKDIR/docs-dom.html"
chromium --dump-dom "$LARDER_URL/docs/" >"$dom"
rm -rf "$profile"

status=0
[[ -s "$out" ]] || { echo "docs screenshot: no screenshot was written" >&2; status=1; }
operations="$(grep -o 'class="opblock opblock-[a-z]*' "$dom" | wc -l)"
for needle in 'opblock' '/items' '/auth/token' 'Authorize'; do
    if ! grep -q -- "$needle" "$dom"; then
        echo "docs screenshot: the rendered page does not contain \"$needle\"" >&2
        status=1
    fi
done
if [[ "$operations" -lt 5 ]]; then
    echo "docs screenshot: only $operations operations rendered" >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "--- chromium log" >&2; tail -20 "$LARDER_WORKDIR/chromium.log" >&2 || true
    echo "--- larder log" >&2; tail -20 "$LARDER_WORKDIR/larder.log" >&2 || true
    exit 1
fi
echo "docs screenshot: $operations operations rendered; screenshot in $out"
