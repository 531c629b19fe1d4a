#!/usr/bin/env python3
"""docs/status-codes.md from larder's OpenAPI document: every (method route, status) pair
with the condition that produces it, as the document describes it.

    python3 clients/status_codes.py OPENAPI > docs/status-codes.md
    python3 clients/status_codes.py OPENAPI --check docs/status-codes.md

OPENAPI is a file or an http(s) URL (a running server's /openapi.json). With --check, the
committed file is compared with what the document gives and the differences are printed;
the exit status is 1 when they differ. Standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import urllib.request
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")

HEADER = """\
# Status codes

<!-- Generated from the served OpenAPI document by clients/status_codes.py; do not edit.
     Regenerate: python3 clients/status_codes.py http://127.0.0.1:8000/openapi.json > docs/status-codes.md
     CI (clients/check.sh) fails when this file differs from the running server's document. -->

Every status each operation documents, with the condition that produces it (the
response's description in `/openapi.json`). Besides these, any request may meet the
answers docs/contract.md lists under "Everywhere": 405 with `Allow` for a known method the
path does not serve, 501 for a method larder does not know at all (`BREW`), `OPTIONS`'s
204, 404 for a path no route matches, 500 from a handler that panicked, 503 when the
request deadline passes, and hyper's 400 or 431 for a request it cannot parse. A test
produces each pair (clients/coverage.py).

| Method | Route | Status | Condition |
| --- | --- | --- | --- |
"""


def load(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:
            document: dict[str, Any] = json.load(answer)
    else:
        with open(source, encoding="utf-8") as file:
            document = json.load(file)
    return document


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follows a local `$ref` (`#/components/responses/Name`)."""
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise SystemExit(f"status_codes: a non-local $ref: {ref}")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
        seen += 1
        if seen > 16:
            raise SystemExit(f"status_codes: a $ref cycle at {ref}")
    return node


def cell(text: str) -> str:
    """One table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def status_key(status: str) -> tuple[int, str]:
    return (int(status), "") if status.isdigit() else (1000, status)


def render(document: dict[str, Any]) -> str:
    rows = []
    for route, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.get("responses", {})
            for status in sorted(responses, key=status_key):
                response = resolve(document, responses[status])
                condition = cell(response.get("description", ""))
                if not condition:
                    raise SystemExit(f"status_codes: {method.upper()} {route} {status} has no description")
                rows.append(f"| {method.upper()} | `{route}` | {status} | {condition} |\n")
    return HEADER + "".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("openapi", help="the OpenAPI document: a file or an http(s) URL")
    parser.add_argument("--check", metavar="FILE", help="compare FILE with the document instead of printing")
    args = parser.parse_args()
    table = render(load(args.openapi))
    if args.check is None:
        sys.stdout.write(table)
        return 0
    with open(args.check, encoding="utf-8") as file:
        committed = file.read()
    if committed == table:
        print(f"status_codes: {args.check} matches the document")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            table.splitlines(keepends=True),
            fromfile=f"{args.check} (committed)",
            tofile=f"{args.check} (from {args.openapi})",
        )
    )
    print(
        f"status_codes: {args.check} is stale; regenerate it with "
        f"python3 clients/status_codes.py <server>/openapi.json > {args.check}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
