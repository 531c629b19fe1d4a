#!/usr/bin/env bash
# The benchmark charts render: each SVG given is loaded in headless Chromium (Debian's
# `chromium`) both as an image (strict XML: a malformed file does not load) and inline (its
# bars laid out), and a screenshot is taken. Fails when an SVG does not load, has
# no bars, or has a bar with no width. Screenshots are kept in $BENCH_CHART_SCREENSHOTS
# when it names a directory.
#
#   tests/bench_chart.sh docs/bench.svg [more.svg ...]
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_bin="$(command -v chromium || command -v chromium-browser || true)"
if [[ -z "$chromium_bin" ]]; then
    echo "bench chart: chromium is not installed (apt-get install chromium)" >&2
    exit 1
fi
work="$(mktemp -d -t larder-chart.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chromium() {
    "$chromium_bin" --headless --no-sandbox --disable-gpu --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --allow-file-access-from-files --user-data-dir="$work/profile" \
        --virtual-time-budget=5000 "$@" 2>>"$work/chromium.log"
}

status=0
for svg in "$@"; do
    svg="$(realpath "$svg")"
    page="$work/page.html"
    python3 - "$svg" "$page" <<'PY'
import html, json, sys
svg, page = sys.argv[1], sys.argv[2]
text = open(svg, encoding="utf-8").read()
open(page, "w", encoding="utf-8").write(f"""<!doctype html><meta charset="utf-8">
<body style="margin:0"><img id="image" src="file://{html.escape(svg)}"><div id="inline">{text}</div>
<pre id="verdict">pending</pre>
<script>
function judge() {{
  const image = document.getElementById("image");
  const bars = [...document.querySelectorAll("#inline rect.bar")];
  const flat = bars.filter(bar => !(bar.getBBox().width > 0 && bar.getBBox().height > 0));
  document.getElementById("verdict").textContent = "VERDICT " + JSON.stringify({{
    loaded: image.complete && image.naturalWidth > 0, width: image.naturalWidth,
    height: image.naturalHeight, bars: bars.length, flat: flat.length,
    larder: bars.filter(bar => bar.classList.contains("larder")).length,
    baseline: bars.filter(bar => bar.classList.contains("baseline")).length}});
}}
const image = document.getElementById("image");
if (image.complete) judge(); else {{ image.onload = judge; image.onerror = judge; }}
</script>""")
PY
    verdict="$(chromium --dump-dom "file://$page" | grep -o 'VERDICT {.*}' | head -1 || true)"
    shot="${BENCH_CHART_SCREENSHOTS:-$work}/$(basename "${svg%.svg}").png"
    chromium --window-size=900,1000 --screenshot="$shot" "file://$svg" >/dev/null || true
    if ! python3 - "$svg" "$verdict" <<'PY'
import json, sys
svg, verdict = sys.argv[1], sys.argv[2]
if not verdict.startswith("VERDICT "):
    sys.exit(f"bench chart: {svg}: Chromium gave no verdict (the page did not run)")
v = json.loads(verdict[len("VERDICT "):])
problems = []
if not v["loaded"]:
    problems.append("it does not load as an image (not well-formed SVG)")
if v["bars"] < 2 or v["larder"] != v["baseline"]:
    problems.append(f"{v['larder']} larder bars and {v['baseline']} baseline bars")
if v["flat"]:
    problems.append(f"{v['flat']} bars have no width or height")
if problems:
    sys.exit(f"bench chart: {svg}: " + "; ".join(problems))
print(f"bench chart: {svg}: {v['width']}x{v['height']}, {v['larder']} routes drawn")
PY
    then
        status=1
    fi
done
if [[ $status -ne 0 ]]; then
    echo "--- chromium log" >&2
    tail -20 "$work/chromium.log" >&2 || true
fi
exit $status
