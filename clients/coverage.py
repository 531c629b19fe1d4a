#!/usr/bin/env python3
"""Contract coverage: every documented (method, route, status) produced by a test, and every
status a test produced documented.

    LARDER_CONTRACT_COVERAGE=DIR cargo test --release
    python3 clients/coverage.py DIR [--documented docs/status-codes.md]

The black-box suite's harness (tests/api/helpers.rs) writes, into DIR, each (method, route
template, status) its servers answered, as the servers count them for /metrics. This script
compares that with docs/status-codes.md (itself checked against the served OpenAPI document
by clients/check.sh) and with the answers docs/contract.md gives every request ("Everywhere",
listed below). It prints each documented pair no test produced and each produced pair that
is not documented; the exit status is 1 when either list is not empty. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# Answers any path may give before or instead of its operations (docs/contract.md,
# "Everywhere"): the status-codes.md header names them. Each must be produced somewhere too.
# 405 with Allow: a known method the path does not serve. 501: a method larder does not know
# ("other" in the metrics). 204: OPTIONS. 406 and 414 are refused before routing, so they
# can meet any method. 404: a path no route matches ("unmatched").
UNSERVED_METHOD = {"405", "406", "414"}
UNKNOWN_METHOD = {"501", "406", "414"}
# 200: a CORS preflight, answered by tower-http's CORS layer when LARDER_CORS_ORIGINS is set.
OPTIONS = {"204", "200", "406", "414"}
# The documentation itself (docs/contract.md, "Documentation"): not operations of the
# document it serves.
DOCUMENTATION = re.compile(r"^(/openapi\.json|/docs(/.*)?)$")
DOCUMENTATION_ANSWERS = {"200", "404", "405", "406", "414"}
UNMATCHED_PATH = {"404", "405", "406", "414", "501"}
EVERYWHERE = [
    ("405 for a known method the path does not serve", "405"),
    ("501 for a method larder does not know", "501"),
    ("204 for OPTIONS", "204"),
    ("404 for a path no route matches", "404"),
    ("500 from a handler that panicked", "500"),
    ("503 when the request deadline passes", "503"),
    ("200 for a CORS preflight", "preflight"),
]
# Routes the tests add to their own servers (tests/api/hooks.rs): not larder's contract,
# but where a panic (500) and the request deadline (503) are produced on purpose.
TEST_ROUTE = re.compile(r"^/__test/")
TEST_ROUTE_ANSWERS = {"500", "503"}
ROW = re.compile(r"^\| (?P<method>[A-Z]+) \| `(?P<route>[^`]+)` \| (?P<status>\d{3}|[0-9X]{3}|default) \|")


def documented_pairs(path: Path) -> set[tuple[str, str, str]]:
    pairs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            pairs.add((match["method"], match["route"], match["status"]))
    if not pairs:
        raise SystemExit(f"coverage: no (method, route, status) rows in {path}")
    return pairs


def produced_pairs(directory: Path) -> set[tuple[str, str, str]]:
    files = sorted(directory.glob("*.tsv"))
    if not files:
        raise SystemExit(
            f"coverage: nothing recorded in {directory}: run the suite with LARDER_CONTRACT_COVERAGE={directory}"
        )
    pairs = set()
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            method, route, status = line.split("\t")
            pairs.add((method, route, status))
    return pairs


def check(
    documented: set[tuple[str, str, str]], produced: set[tuple[str, str, str]]
) -> tuple[list[str], list[str], int]:
    operations: dict[str, set[str]] = {}
    for method, route, _ in documented:
        operations.setdefault(route, set()).add(method)

    undocumented = []
    covered = set()
    everywhere_seen = set()
    documentation_seen = set()
    for method, route, status in sorted(produced):
        if TEST_ROUTE.match(route):
            if status in TEST_ROUTE_ANSWERS:
                everywhere_seen.add(status)
            continue
        # HEAD is GET without the body (RFC 9110 §9.3.2): it answers as the route's GET does.
        as_method = "GET" if method == "HEAD" and "GET" in operations.get(route, ()) else method
        if (as_method, route, status) in documented:
            covered.add((as_method, route, status))
            continue
        if route == "unmatched":
            allowed = UNMATCHED_PATH
        elif DOCUMENTATION.match(route):
            if status in DOCUMENTATION_ANSWERS:
                documentation_seen.add((method, route, status))
                continue
            allowed = set()
        elif route not in operations:
            undocumented.append(f"{method} {route} {status}  (the route is not in the document)")
            continue
        elif method == "other":
            allowed = UNKNOWN_METHOD
        elif method == "OPTIONS":
            allowed = OPTIONS
            if status == "200":
                everywhere_seen.add("preflight")
                continue
        elif as_method not in operations[route]:
            allowed = UNSERVED_METHOD
        else:
            allowed = set()
        if status in allowed:
            everywhere_seen.add(status)
        else:
            undocumented.append(f"{method} {route} {status}")

    missing = [f"{method} {route} {status}" for method, route, status in sorted(documented - covered)]
    for page in [("GET", "/openapi.json", "200"), ("GET", "/docs/", "200")]:
        if page not in documentation_seen:
            missing.append(f"{' '.join(page)} (docs/contract.md, the documentation)")
    for what, key in EVERYWHERE:
        if key not in everywhere_seen:
            missing.append(f"{what} (docs/contract.md, Everywhere)")
    return missing, undocumented, len(covered)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recorded", type=Path, help="the directory LARDER_CONTRACT_COVERAGE named")
    parser.add_argument("--documented", type=Path, default=Path("docs/status-codes.md"))
    args = parser.parse_args()
    documented = documented_pairs(args.documented)
    missing, undocumented, covered = check(documented, produced_pairs(args.recorded))
    for pair in missing:
        print(f"documented, never produced by a test: {pair}")
    for pair in undocumented:
        print(f"produced by a test, not documented: {pair}")
    print(f"coverage: {covered}/{len(documented)} documented pairs produced; {len(undocumented)} produced pairs undocumented")
    return 1 if missing or undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
