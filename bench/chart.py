#!/usr/bin/env python3
"""The benchmark as a picture: an SVG bar chart of larder against its baseline, per route,
one panel per backend, from the JSON reports `bench.py bench --json` writes.

    python3 bench/chart.py bench/latest/sqlite.json bench/latest/postgres.json -o docs/bench.svg

bench/run.sh calls it after every full run (see bench/README.md); tests/bench_chart.sh
renders the result in headless Chromium, so a broken chart fails CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path

# Route keys in table order, and how each is labelled.
ROUTES = [
    ("healthz", "GET /healthz"),
    ("item", "GET /items/{id}"),
    ("list", "GET /items?limit=20"),
    ("protected", "GET /protected"),
    ("api_data", "GET /api/data"),
    ("create", "POST /items"),
]
# What a panel's reader must know about its baseline.
BACKEND_NOTES = {
    "postgres": "the baseline answers /healthz, /protected and /api/data without PostgreSQL or Redis",
}
BACKEND_TITLES = {
    "sqlite": "SQLite (embedded) vs a minimal axum server",
    "postgres": "PostgreSQL + Redis vs a tokio-postgres server",
}
LARDER_COLOUR = "#2563eb"
BASELINE_COLOUR = "#9ca3af"
WIDTH = 880
LABEL_WIDTH = 170
BAR_AREA = 520
ROW_HEIGHT = 44
BAR_HEIGHT = 15
PANEL_HEAD = 56


def rate(run: dict) -> float:
    return run["requests"] / (run["duration_us"] / 1e6) if run.get("duration_us") else 0.0


def panel(report: dict, top: float) -> tuple[list[str], float]:
    """One backend's bars, from `top` down; returns the SVG elements and the next top."""
    backend = report.get("backend", "sqlite")
    results = report["results"]
    rows = [(key, label) for key, label in ROUTES if key in results]
    peak = max([rate(results[key][side]) for key, _ in rows for side in ("larder", "baseline")] + [1.0])
    out = [
        f'<text class="panel-title" x="16" y="{top + 22:.0f}">{escape(BACKEND_TITLES.get(backend, backend))}</text>',
        f'<text class="note" x="16" y="{top + 40:.0f}">{escape(report.get("date", ""))}, {report.get("cores", "?")} cores, '
        f'{report.get("connections", "?")} connections, requests per second (median ratio of '
        f'{report.get("rounds", "?")} alternating runs)</text>',
    ]
    y = top + PANEL_HEAD
    for key, label in rows:
        result = results[key]
        out.append(f'<text class="route" x="16" y="{y + BAR_HEIGHT + 4:.0f}">{escape(label)}</text>')
        for number, (side, colour) in enumerate((("larder", LARDER_COLOUR), ("baseline", BASELINE_COLOUR))):
            value = rate(result[side])
            width = max(1.0, BAR_AREA * value / peak)
            bar_y = y + number * (BAR_HEIGHT + 2)
            out.append(f'<rect class="bar {side}" data-backend="{backend}" data-route="{key}" x="{LABEL_WIDTH}" '
                       f'y="{bar_y:.0f}" width="{width:.1f}" height="{BAR_HEIGHT}" fill="{colour}">'
                       f'<title>{escape(label)}: {side} {value:,.0f} req/s</title></rect>')
            out.append(f'<text class="value" x="{LABEL_WIDTH + width + 6:.1f}" y="{bar_y + BAR_HEIGHT - 3:.0f}">'
                       f'{value:,.0f}</text>')
        out.append(f'<text class="ratio" x="{WIDTH - 16}" y="{y + BAR_HEIGHT + 4:.0f}" text-anchor="end">'
                   f'× {result["ratio"]:.2f}</text>')
        y += ROW_HEIGHT
    imported = report.get("import") or {}
    if "items_per_s" in imported:
        out.append(f'<text class="note" x="16" y="{y + 8:.0f}">import job: {imported["items_per_s"]:,.0f} items/s '
                   f'({imported["items"]:,} items)</text>')
        y += 20
    if backend in BACKEND_NOTES:
        out.append(f'<text class="note" x="16" y="{y + 8:.0f}">{escape(BACKEND_NOTES[backend])}</text>')
        y += 20
    return out, y + 16


def render(reports: list[dict]) -> str:
    body: list[str] = []
    top = 44.0
    for report in sorted(reports, key=lambda r: list(BACKEND_TITLES).index(r.get("backend", "sqlite"))):
        elements, top = panel(report, top)
        body.extend(elements)
    height = int(top + 8)
    legend_x = WIDTH - 300
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="larder benchmark">',
        "<style>text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;fill:#111827}"
        ".title{font-size:18px;font-weight:600}.panel-title{font-size:15px;font-weight:600}"
        ".note{font-size:11px;fill:#4b5563}.route{font-size:13px}.value{font-size:11px;fill:#374151}"
        ".ratio{font-size:13px;font-weight:600}.legend{font-size:12px}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text class="title" x="16" y="28">larder against its baseline, per route</text>',
        f'<rect x="{legend_x}" y="16" width="12" height="12" fill="{LARDER_COLOUR}"/>',
        f'<text class="legend" x="{legend_x + 18}" y="27">larder</text>',
        f'<rect x="{legend_x + 80}" y="16" width="12" height="12" fill="{BASELINE_COLOUR}"/>',
        f'<text class="legend" x="{legend_x + 98}" y="27">baseline</text>',
        f'<text class="legend" x="{legend_x + 170}" y="27">× = larder / baseline</text>',
        *body,
        "</svg>",
        "",
    ])


def write_chart(report_paths: list[Path], out: Path) -> None:
    reports = [json.loads(path.read_text()) for path in report_paths if path.exists()]
    if not reports:
        raise SystemExit("chart: no report to draw")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(reports))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="bench.py bench --json reports, one per backend")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    write_chart(args.reports, args.out)
    print(f"chart: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
