#!/usr/bin/env python3
"""larder's load benchmark and mixed-load check (Python 3 standard library + wrk).

    bench.py bench [--duration 10] [--smoke]   the table of bench/README.md
    bench.py load  [--duration 60] [--connections 1000]   the mixed load of issue 10
    bench.py listing [--items 1000000]   filtered, sorted pages over 1M items; export RSS (issue 20)

bench/run.sh and bench/load.sh are the documented entry points; they build the release
binaries first and pass LARDER_BIN / BASELINE_BIN here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
EMAIL = "bench@example.com"
PASSWORD = "plum-kettle-seventeen"
SEED_ITEMS = 10_000


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"[bench] FAILED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit() -> None:
    """1,000 connections need more than the usual 1,024 descriptors, in wrk and in larder."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log(f"open-file limit: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, int]:
        """VmRSS / VmHWM in KiB from /proc (Linux)."""
        out: dict[str, int] = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        except OSError:
            pass
        return out

    def reset_peak(self) -> None:
        """Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`)."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError as error:
            log(f"cannot reset the peak RSS ({error}): the peak includes the seeding")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            fail(f"{server.name} exited with {server.proc.returncode} before answering:\n{server.log_tail()}")
        try:
            status, _, _ = request(server.port, "GET", "/healthz", timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    fail(f"{server.name} did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def start_larder(binary: str, workdir: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LARDER_")}
    env.update(
        LARDER_BIND=f"127.0.0.1:{port}",
        LARDER_DATABASE_URL=f"sqlite://{workdir}/bench.db",
        LARDER_LOG_LEVEL="warn",
        LARDER_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123",
    )
    env.update(extra_env or {})
    log_path = workdir / "larder.log"
    proc = subprocess.Popen([binary, "serve"], env=env, stdin=subprocess.DEVNULL,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = Server("larder", proc, port, log_path)
    wait_healthy(server)
    return server


def start_baseline(binary: str, workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / "baseline.log"
    proc = subprocess.Popen([binary, f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = Server("baseline", proc, port, log_path)
    wait_healthy(server)
    return server


# ---------------------------------------------------------------- HTTP helpers


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def json_request(port: int, method: str, path: str, payload=None, token: str | None = None,
                 timeout: float = 60, conn=None) -> tuple[int, dict[str, str], object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = None if payload is None else json.dumps(payload).encode()
    status, h, data = request(port, method, path, body, headers, timeout, conn)
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")
    return status, h, parsed


def register_and_login(port: int, email: str = EMAIL, password: str = PASSWORD) -> str:
    status, _, body = json_request(port, "POST", "/users", {"email": email, "password": password, "full_name": "Bench"})
    if status not in (201, 409):
        fail(f"POST /users answered {status}: {body}")
    form = urllib.parse.urlencode({"username": email, "password": password}).encode()
    status, _, data = request(port, "POST", "/auth/token", form,
                              {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        fail(f"POST /auth/token answered {status}: {data[:300]!r}")
    return json.loads(data)["access_token"]


def has_route(port: int, path: str) -> bool:
    status, _, spec = json_request(port, "GET", "/openapi.json")
    return status == 200 and isinstance(spec, dict) and path in spec.get("paths", {})


def item(i: int) -> dict:
    return {"name": f"seed item {i}", "description": "seeded for the benchmark",
            "price": round((i % 1000) / 10, 2), "quantity": i % 50}


def run_import(port: int, token: str, count: int, timeout: float = 600) -> dict:
    """POST /process with `count` items and poll the job; items/s from the first byte sent
    to the job's `succeeded` seen by the poller."""
    payload = {"kind": "import_items", "items": [item(i) for i in range(count)]}
    body = json.dumps(payload).encode()
    t0 = time.perf_counter()
    status, headers, answer = json_request_raw(port, "/process", body, token)
    if status != 202:
        return {"error": f"POST /process answered {status}: {str(answer)[:300]}"}
    location = headers.get("location") or (answer or {}).get("status_url")
    if not location:
        return {"error": f"POST /process gave no Location: {answer}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    job: dict = {}
    while True:
        status, _, job = json_request(port, "GET", location, token=token, conn=conn)
        if status != 200:
            return {"error": f"GET {location} answered {status}: {job}"}
        if job.get("status") in ("succeeded", "failed"):
            break
        if time.perf_counter() - t0 > timeout:
            return {"error": f"the import job did not finish within {timeout:.0f} s: {job}"}
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    conn.close()
    result = job.get("result") or {}
    created = result.get("created") if isinstance(result, dict) else None
    n_created = len(created) if isinstance(created, list) else None
    out = {"status": job.get("status"), "seconds": elapsed, "items": count,
           "items_per_s": count / elapsed, "created": n_created,
           "rejected": len(result.get("rejected") or []) if isinstance(result, dict) else None,
           "body_bytes": len(body)}
    if job.get("status") != "succeeded":
        out["error"] = f"the import job ended {job.get('status')}: {job.get('error')}"
    elif n_created is not None and n_created != count:
        out["error"] = f"the import created {n_created} of {count} items"
    return out


def json_request_raw(port: int, path: str, body: bytes, token: str):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status, h, data = request(port, "POST", path, body, headers, timeout=300)
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")
    return status, h, parsed


def seed_items(port: int, token: str, count: int) -> tuple[int, int]:
    """Seeds `count` items (by one import job when POST /process exists, else by parallel
    POST /items on keep-alive connections) and returns the id range they got."""
    t0 = time.perf_counter()
    via = "POST /items x %d (16 connections)" % count
    if has_route(port, "/process"):
        result = run_import(port, token, count)
        if "error" in result:
            fail(f"seeding by import: {result['error']}")
        via = "one import job"
    else:
        local = threading.local()
        errors: list[str] = []

        def one(i: int) -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                status, _, body = json_request(port, "POST", "/items", item(i), token=token, conn=local.conn)
            except (OSError, http.client.HTTPException) as error:
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                errors.append(f"item {i}: {error}")
                return
            if status != 201:
                errors.append(f"item {i}: {status} {body}")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(count)))
        if errors:
            fail(f"seeding: {len(errors)} failures, first: {errors[0]}")
    status, _, page = json_request(port, "GET", "/items?limit=1")
    if status != 200 or not page.get("items"):
        fail(f"GET /items?limit=1 after seeding answered {status}: {page}")
    first = page["items"][0]["id"]
    last = first + count - 1
    status, _, _ = json_request(port, "GET", f"/items/{last}")
    if status != 200:
        fail(f"seeded ids are not contiguous: GET /items/{last} answered {status}")
    log(f"seeded {count} items (ids {first}..{last}) via {via} in {time.perf_counter() - t0:.1f} s")
    return first, last


# ---------------------------------------------------------------- wrk


def wrk(url: str, seconds: float, connections: int, threads: int, script: str | None,
        headers: list[str], env: dict[str, str], workdir: Path, marker: str = "BENCH-RESULT",
        timeout_s: int = 5) -> dict:
    parts = [(LUA_DIR / script).read_text()] if script else []
    if marker == "BENCH-RESULT":
        parts.append((LUA_DIR / "report.lua").read_text())
    lua = workdir / f"wrk-{script or 'get'}.lua"
    lua.write_text("\n".join(parts))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           f"--timeout", f"{timeout_s}s", "-s", str(lua)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    run_env = dict(os.environ)
    run_env.update(env)
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=seconds + 120)
    for line in proc.stdout.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1:])
    fail(f"wrk printed no {marker} line (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@dataclass
class Route:
    key: str
    label: str
    path: str
    script: str | None = None
    auth: bool = False
    target: float = 0.0
    read: bool = True


ROUTES = [
    Route("healthz", "GET /healthz", "/healthz", target=0.90),
    Route("item", "GET /items/{id}", "/items/1", script="item_get.lua", target=0.50),
    Route("list", "GET /items?limit=20", "/items?limit=20", target=0.25),
    Route("protected", "GET /protected", "/protected", auth=True, target=0.45),
    Route("api_data", "GET /api/data", "/api/data", script="api_data.lua", target=0.60),
    Route("create", "POST /items", "/items", script="item_post.lua", target=0.15, read=False),
]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def combine_runs(larder_runs: list[dict], baseline_runs: list[dict]) -> dict:
    """One route's runs (baseline runs one more than larder's, each larder run between two of
    them) → per server: requests, errors and time summed, p50/p99 the median over the runs;
    the ratio is the median over larder's runs of its rate over the mean of the two baseline
    runs around it."""
    combined: dict = {"runs": {"larder": larder_runs, "baseline": baseline_runs}}
    for name, runs in (("larder", larder_runs), ("baseline", baseline_runs)):
        merged = {key: sum(run[key] for run in runs)
                  for key in ("requests", "duration_us", "status", "connect", "read", "write", "timeout")}
        merged["p50_us"] = median([run["p50_us"] for run in runs])
        merged["p99_us"] = median([run["p99_us"] for run in runs])
        combined[name] = merged
    ratios = []
    for number, run in enumerate(larder_runs):
        around = (rps(baseline_runs[number]) + rps(baseline_runs[number + 1])) / 2
        ratios.append(rps(run) / around if around else 0.0)
    combined["round_ratios"] = ratios
    combined["ratio"] = median(ratios)
    return combined


def errors_of(r: dict) -> int:
    return r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]


def rps(r: dict) -> float:
    return r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0


def selected_routes(keys: str | None) -> list["Route"]:
    if not keys:
        return ROUTES
    wanted = [k.strip() for k in keys.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in {r.key for r in ROUTES}]
    if unknown:
        fail(f"unknown route keys {unknown}; known: {[r.key for r in ROUTES]}")
    return [r for r in ROUTES if r.key in wanted]


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def bench(args: argparse.Namespace) -> int:
    larder_bin, baseline_bin = binaries()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="larder-bench-"))
    duration = args.duration if args.duration is not None else (2 if args.smoke else 5)
    rounds_per_route = args.rounds if args.rounds is not None else (1 if args.smoke else 5)
    import_items = args.import_items if args.import_items is not None else (10_000 if args.smoke else 100_000)
    servers: list[Server] = []
    try:
        larder = start_larder(larder_bin, workdir, {"LARDER_SQLITE_SYNC": args.sqlite_sync})
        servers.append(larder)
        idle_start = larder.status()
        baseline = start_baseline(baseline_bin, workdir)
        servers.append(baseline)
        token = register_and_login(larder.port)
        first, last = seed_items(larder.port, token, SEED_ITEMS)
        env = {"BENCH_ID_MIN": str(first), "BENCH_ID_MAX": str(last), "BENCH_TOKEN": token,
               "BENCH_CLIENTS": "100000"}
        idle_seeded = larder.status()
        larder.reset_peak()  # so the seeding (an import job) does not count as "peak under load"
        common = dict(connections=args.connections, threads=args.threads, env=env, workdir=workdir)
        # Warm both (connections, caches, the allocator) before anything is measured.
        for server in (baseline, larder):
            wrk(server.url + "/healthz", 1, args.connections, args.threads, None, [], env, workdir)
        results: dict[str, dict] = {}
        for route in selected_routes(args.routes):
            headers = [f"Authorization: Bearer {token}"] if route.auth else []

            def run(server: Server, what: str) -> dict:
                log(f"{route.label:<22} {server.name:<8} {what}, {duration} s at {args.connections} connections")
                return wrk(server.url + route.path, duration, script=route.script, headers=headers, **common)

            # Baseline, larder, baseline, larder, ..., baseline: each larder run is compared
            # with the mean of the baseline runs just before and just after it, so a drift in
            # the machine's speed (these are shared VMs) lands on both sides of every ratio.
            baseline_runs = [run(baseline, f"run 1/{rounds_per_route + 1}")]
            larder_runs: list[dict] = []
            for number in range(rounds_per_route):
                larder_runs.append(run(larder, f"round {number + 1}/{rounds_per_route}"))
                baseline_runs.append(run(baseline, f"run {number + 2}/{rounds_per_route + 1}"))
                around = (rps(baseline_runs[-2]) + rps(baseline_runs[-1])) / 2
                log(f"{route.label:<22} round {number + 1}: larder {rps(larder_runs[-1]):,.0f} req/s, baseline "
                    f"{around:,.0f} req/s (mean of the runs around it), "
                    f"ratio {rps(larder_runs[-1]) / around if around else 0:.3f}")
                if not larder.alive():
                    fail(f"larder died during {route.label}:\n{larder.log_tail()}")
            results[route.key] = combine_runs(larder_runs, baseline_runs)
        under_load = larder.status()
        time.sleep(1)
        idle_after = larder.status()
        imported: dict | None = None
        after_import: dict = {}
        if args.routes:
            log("import job: not run (--routes picks routes only)")
        elif has_route(larder.port, "/process"):
            log(f"import job: {import_items} items through POST /process")
            imported = run_import(larder.port, token, import_items)
            after_import = larder.status()
        else:
            imported = None
            after_import = {}
            log("import job: SKIPPED - POST /process is not in /openapi.json yet (the route is being built)")
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cores": os.cpu_count(), "duration_s": duration, "connections": args.connections,
            "threads": args.threads, "rounds": rounds_per_route, "sqlite_sync": args.sqlite_sync, "results": results,
            "rss_kib": {"idle_start": idle_start, "idle_seeded": idle_seeded, "under_load": under_load,
                        "idle_after": idle_after, "after_import": after_import},
            "import": imported, "routes_only": bool(args.routes),
        }
        (workdir / "results.json").write_text(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        problems = print_table(report, smoke=args.smoke)
        log(f"raw results: {args.json or workdir / 'results.json'}")
        if problems:
            for p in problems:
                log(f"problem: {p}")
            return 1
        return 0
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(report: dict, smoke: bool) -> list[str]:
    """Prints the markdown table; returns the problems that make the run itself invalid
    (errors, zero requests, a failed import) -- missed targets are shown, not failed."""
    problems: list[str] = []
    rows = []
    for route in ROUTES:
        if route.key not in report["results"]:
            continue
        r = report["results"][route.key]
        lr, br = r["larder"], r["baseline"]
        ratio = r["ratio"]
        goal = [f"≥ {route.target:.2f}"]
        met = ratio >= route.target
        if route.read:
            goal.append("p99 ≤ 5 ms")
            met = met and lr["p99_us"] <= 5000
        rows.append([route.label, f"{rps(lr):,.0f}", ms(lr["p50_us"]), ms(lr["p99_us"]), str(errors_of(lr)),
                     f"{rps(br):,.0f}", ms(br["p99_us"]), f"{ratio:.3f}", ", ".join(goal), "yes" if met else "**no**"])
        for name, res in (("larder", lr), ("baseline", br)):
            if res["requests"] == 0:
                problems.append(f"{route.label}: {name} answered no requests")
            if errors_of(res):
                problems.append(f"{route.label}: {name} had {errors_of(res)} errors "
                                f"(status>=400 {res['status']}, connect {res['connect']}, read {res['read']}, "
                                f"write {res['write']}, timeout {res['timeout']})")
    imp = report["import"]
    if imp is None and report["routes_only"]:
        pass
    elif imp is None:
        rows.append(["import job (items/s)", "skipped: no POST /process yet", "", "", "", "", "", "", "≥ 100,000", "n/a"])
    elif "items_per_s" in imp:
        rows.append([f"import job ({imp['items']:,} items)", f"{imp['items_per_s']:,.0f} items/s",
                     f"{imp['seconds']:.2f} s total", "", "0" if "error" not in imp else "1", "", "", "",
                     "≥ 100,000 items/s", "yes" if imp["items_per_s"] >= 100_000 and "error" not in imp else "**no**"])
        if "error" in imp:
            problems.append(f"import: {imp['error']}")
    else:
        rows.append(["import job (items/s)", "error", "", "", "1", "", "", "", "≥ 100,000", "**no**"])
        problems.append(f"import: {imp['error']}")
    rss = report["rss_kib"]
    peak = rss["under_load"].get("VmHWM", 0)
    head = ["route", "larder req/s", "p50 ms", "p99 ms", "errors", "baseline req/s", "baseline p99 ms",
            "ratio", "target", "met"]
    out = sys.stdout
    out.write(f"\nlarder benchmark, {report['date']}, {report['cores']} cores, wrk -t{report['threads']} "
              f"-c{report['connections']}, {report['rounds']} larder runs between {report['rounds'] + 1} baseline runs of "
              f"{report['duration_s']} s per server per route, "
              f"SQLite synchronous={report['sqlite_sync'].upper()}{' (SMOKE: numbers not meaningful)' if smoke else ''}\n\n")
    out.write("| " + " | ".join(head) + " |\n")
    out.write("|" + "|".join("---" for _ in head) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(row) + " |\n")

    def mib(kib: int | None) -> str:
        return f"{(kib or 0) / 1024:.1f} MiB"

    out.write(f"\nlarder RSS: idle at start {mib(rss['idle_start'].get('VmRSS'))}, idle after seeding "
              f"{mib(rss['idle_seeded'].get('VmRSS'))}, peak under load (VmHWM) {mib(peak)} "
              f"(target ≤ 64 MiB: {'yes' if peak <= 64 * 1024 else 'NO'}), idle after load "
              f"{mib(rss['idle_after'].get('VmRSS'))}")
    if rss.get("after_import"):
        out.write(f", peak after the import job {mib(rss['after_import'].get('VmHWM'))}")
    out.write("\n")
    out.write("req/s = all runs' requests over their time; p50/p99 = median over the runs; ratio = median over "
              "larder's runs of its req/s over the mean of the two baseline runs around it.\n")
    out.write("errors = answers >= 400 + socket errors (connect, read, write, timeout); "
              "GET /api/data runs at the default LARDER_RATE_LIMIT (100/60s) over 100,000 rotating clients, "
              "so a 429 would count as an error.\n")
    out.flush()
    return problems


# ---------------------------------------------------------------- mixed load


def load(args: argparse.Namespace) -> int:
    larder_bin, _ = binaries(baseline=False)
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="larder-load-"))
    server = None
    try:
        # One token stands for many users here, so the per-user job quota is raised: the load
        # exercises the queue instead of counting 429s.
        server = start_larder(larder_bin, workdir, {"LARDER_SQLITE_SYNC": args.sqlite_sync,
                                                    "LARDER_JOB_QUOTA": "100000"})
        token = register_and_login(server.port)
        first, last = seed_items(server.port, token, SEED_ITEMS)
        jobs = has_route(server.port, "/process")
        if not jobs:
            log("job submissions: SKIPPED - POST /process is not in /openapi.json yet (the route is being built)")
        env = {"BENCH_ID_MIN": str(first), "BENCH_ID_MAX": str(last), "BENCH_TOKEN": token,
               "BENCH_EMAIL": EMAIL, "BENCH_PASSWORD": PASSWORD, "BENCH_CLIENTS": "50",
               "BENCH_JOB_PERMILLE": "5" if jobs else "0", "BENCH_LOGIN_PERMILLE": "2"}
        log(f"mixed load: {args.connections} keep-alive connections for {args.duration} s")
        r = wrk(server.url + "/", args.duration, args.connections, args.threads, "mixed.lua", [], env, workdir,
                marker="LOAD-RESULT", timeout_s=10)
        alive = server.alive()
        status = server.status()
        health = None
        if alive:
            health, _, _ = request(server.port, "GET", "/healthz", timeout=5)
        total = r["requests"]
        print(f"\nmixed load, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
              f"{args.connections} connections, {args.duration} s, jobs {'on' if jobs else 'off (no POST /process)'}")
        print(f"  requests {total:,} ({total / (r['duration_us'] / 1e6):,.0f}/s), p50 {ms(r['p50_us'])} ms, "
              f"p99 {ms(r['p99_us'])} ms, max {ms(r['max_us'])} ms")
        print(f"  2xx {r['2xx']:,}  3xx {r['3xx']:,}  4xx (not 429) {r['4xx']:,}  429 {r['429']:,}  5xx {r['5xx']:,}")
        print(f"  socket errors: connect {r['connect']}, read {r['read']}, write {r['write']}, timeout {r['timeout']}")
        print(f"  larder peak RSS {status.get('VmHWM', 0) / 1024:.1f} MiB; /healthz after the load: {health}")
        problems = []
        if total == 0:
            problems.append("no requests were answered")
        if r["5xx"]:
            problems.append(f"{r['5xx']} answers were 5xx")
        socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
        if socket_errors:
            problems.append(f"{socket_errors} connection errors")
        if r["4xx"] > total * 0.01:
            problems.append(f"{r['4xx']} unexpected 4xx answers (more than 1%): the load script is off")
        if not alive or health != 200:
            problems.append(f"larder is not healthy after the load:\n{server.log_tail()}")
        for p in problems:
            log(f"problem: {p}")
        if not problems:
            print("  OK: zero 5xx, zero connection errors")
        return 1 if problems else 0
    finally:
        if server:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- listing and export (issue 20)


def rss_kib(server: Server) -> int:
    return server.status().get("VmRSS", 0)


def export_once(server: Server, accept: str) -> dict:
    """Reads all of GET /items/export as a slow-enough client would (64 KiB reads), sampling
    larder's RSS every 10 ms; the peak is also VmHWM, reset before the export starts."""
    server.reset_peak()
    idle = rss_kib(server)
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(server))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", "/items/export", headers={"Accept": accept})
    response = conn.getresponse()
    size = lines = 0
    while True:
        chunk = response.read(65536)
        if not chunk:
            break
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    conn.close()
    stop.set()
    sampler.join()
    hwm = server.status().get("VmHWM", 0)
    return {"accept": accept, "status": response.status, "bytes": size, "lines": lines,
            "seconds": elapsed, "idle_kib": idle, "peak_kib": max(peak[0], hwm),
            "growth_kib": max(peak[0], hwm) - idle}


def listing(args: argparse.Namespace) -> int:
    """A filtered, sorted page over `--items` items on SQLite at 64 connections (target p99
    <= 5 ms), then larder's RSS while exporting them all (target: within 16 MiB of idle)."""
    larder_bin, _ = binaries(baseline=False)
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="larder-listing-"))
    server = None
    try:
        server = start_larder(larder_bin, workdir, {"LARDER_SQLITE_SYNC": args.sqlite_sync,
                                                    "LARDER_JOB_QUOTA": "100000"})
        owners = []
        per_owner = args.items // args.owners
        t0 = time.perf_counter()
        for k in range(args.owners):
            token = register_and_login(server.port, f"owner{k}@example.com")
            _, _, me = json_request(server.port, "GET", "/users/me", token=token)
            owners.append(str(me["id"]))
            done = 0
            while done < per_owner:
                count = min(100_000, per_owner - done)
                result = run_import(server.port, token, count)
                if "error" in result:
                    fail(f"seeding by import: {result['error']}")
                done += count
        total = per_owner * args.owners
        log(f"seeded {total:,} items for {args.owners} owners in {time.perf_counter() - t0:.1f} s")
        time.sleep(1)
        idle = rss_kib(server)
        env = {"BENCH_OWNERS": ",".join(owners)}
        wrk(server.url + "/", 1, args.connections, args.threads, "item_filtered.lua", [], env, workdir)
        runs = [wrk(server.url + "/", args.duration, args.connections, args.threads, "item_filtered.lua",
                    [], env, workdir) for _ in range(args.rounds)]
        requests_ = sum(r["requests"] for r in runs)
        seconds = sum(r["duration_us"] for r in runs) / 1e6
        p50 = median([r["p50_us"] for r in runs])
        p99 = median([r["p99_us"] for r in runs])
        errors = sum(errors_of(r) for r in runs)
        exports = [export_once(server, accept) for accept in ("application/x-ndjson", "text/csv")]
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(f"\nlisting and export, {when}, {os.cpu_count()} cores, {total:,} items, SQLite "
              f"(sync={args.sqlite_sync}), {args.rounds} runs of {args.duration:.0f} s at {args.connections} connections\n")
        print("| row | req/s | p50 ms | p99 ms | errors | target | met |")
        print("|---|---|---|---|---|---|---|")
        print(f"| GET /items?owner_id=&min_price=&max_price=&sort=&limit=20 | {requests_ / seconds:,.0f} | "
              f"{ms(p50)} | {ms(p99)} | {errors} | p99 <= 5 ms | {'yes' if p99 <= 5000 and not errors else '**no**'} |")
        print("\n| export | items | MiB | seconds | items/s | RSS idle MiB | RSS peak MiB | growth MiB | target | met |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        problems = errors > 0
        for e in exports:
            items = e["lines"] - (1 if e["accept"] == "text/csv" else 0)
            met = e["status"] == 200 and items == total and e["growth_kib"] <= 16 * 1024
            problems |= not met
            print(f"| {e['accept']} | {items:,} | {e['bytes'] / 2**20:.1f} | {e['seconds']:.2f} | "
                  f"{items / e['seconds']:,.0f} | {e['idle_kib'] / 1024:.1f} | {e['peak_kib'] / 1024:.1f} | "
                  f"{e['growth_kib'] / 1024:.1f} | <= 16 MiB | {'yes' if met else '**no**'} |")
        print(f"\nlarder RSS idle after seeding: {idle / 1024:.1f} MiB")
        return 0 if not problems or not args.strict else 1
    finally:
        if server:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- main


def binaries(baseline: bool = True) -> tuple[str, str]:
    larder = os.environ.get("LARDER_BIN")
    base = os.environ.get("BASELINE_BIN")
    if not larder or (baseline and not base):
        fail("LARDER_BIN and BASELINE_BIN must name the release binaries (bench/run.sh sets them)")
    for path in (larder, base) if baseline else (larder,):
        if not os.access(path, os.X_OK):
            fail(f"{path} is not an executable")
    if not shutil.which("wrk"):
        fail("wrk is not installed (Debian package `wrk`)")
    return larder, base or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="the benchmark table")
    b.add_argument("--smoke", action="store_true", help="2 s per run and a 10,000-item import: checks the run works")
    b.add_argument("--duration", type=float, help="seconds per server per route per round (default 5, smoke 2)")
    b.add_argument("--rounds", type=int, help="larder runs per route, each between two baseline runs (default 5, smoke 1)")
    b.add_argument("--connections", type=int, default=64)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--import-items", type=int, help="items in the import job (default 100,000, smoke 10,000)")
    b.add_argument("--json", help="also write the raw results here")
    b.add_argument("--routes", help="comma-separated route keys to run alone, without the import job "
                   f"({', '.join(r.key for r in ROUTES)})")
    g = sub.add_parser("listing", help="a filtered, sorted page over 1,000,000 items, and the export's RSS")
    g.add_argument("--items", type=int, default=1_000_000)
    g.add_argument("--owners", type=int, default=10)
    g.add_argument("--duration", type=float, default=5)
    g.add_argument("--rounds", type=int, default=3)
    g.add_argument("--connections", type=int, default=64)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    l = sub.add_parser("load", help="the mixed 1,000-connection load")
    l.add_argument("--duration", type=float, default=60)
    l.add_argument("--connections", type=int, default=1000)
    l.add_argument("--threads", type=int, default=2)
    for p in (b, l, g):
        p.add_argument("--sqlite-sync", choices=["full", "normal"], default="full")
        p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args()
    return {"bench": bench, "load": load, "listing": listing}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
