"""Import throughput (100k items) and POST /items latency during the import.

Usage: python3 bench/measure_import.py target/release/larder [postgres://...]  (ROWS=100000 by default)
"""
import http.client, json, os, subprocess, sys, tempfile, threading, time, statistics, datetime, socket

BIN = sys.argv[1]
DB = sys.argv[2] if len(sys.argv) > 2 else None
N = int(os.environ.get("ROWS", "100000"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

tmp = tempfile.mkdtemp()
port = free_port()
db = DB or f"sqlite://{tmp}/bench.db"
env = dict(os.environ, LARDER_DATABASE_URL=db, LARDER_BIND=f"127.0.0.1:{port}",
           LARDER_JWT_SECRET="x" * 40, LARDER_LOG_LEVEL="warn", LARDER_WORKERS="2")
proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)

def conn():
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)

def req(c, method, path, body=None, token=None, ctype="application/json"):
    headers = {}
    if body is not None:
        headers["Content-Type"] = ctype
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    return r.status, data, r

for _ in range(200):
    try:
        if req(conn(), "GET", "/healthz")[0] == 200:
            break
    except OSError:
        time.sleep(0.05)

c = conn()
email = f"bench{time.time_ns()}@example.com"
st, _, _ = req(c, "POST", "/users", json.dumps({"email": email, "password": "correct horse battery"}))
assert st == 201, st
st, data, _ = req(c, "POST", "/auth/token", f"username={email}&password=correct+horse+battery", ctype="application/x-www-form-urlencoded")
token = json.loads(data)["access_token"]

def item_latencies(seconds=None, stop=None, count=None):
    cc = conn(); out = []
    i = 0
    while True:
        if count is not None and i >= count: break
        if stop is not None and stop.is_set(): break
        t = time.perf_counter()
        st, _, _ = req(cc, "POST", "/items", json.dumps({"name": f"probe{i}", "price": 1.5}), token)
        assert st == 201, st
        out.append((time.perf_counter() - t) * 1000)
        i += 1
    return out

def summary(name, xs):
    xs = sorted(xs)
    pct = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    print(f"{name}: n={len(xs)} p50={pct(0.5):.2f}ms p95={pct(0.95):.2f}ms p99={pct(0.99):.2f}ms max={xs[-1]:.2f}ms")

base = item_latencies(count=300)
summary("POST /items idle", base)

# The same rows as bench.py's import (1,000 distinct prices, so the price indexes take each
# chunk's rows at 1,000 places).
items = [{"name": f"seed item {i}", "description": "seeded for the benchmark",
          "price": round((i % 1000) / 10, 2), "quantity": i % 50} for i in range(N)]
body = json.dumps({"kind": "import_items", "items": items})
print(f"body: {len(body)/1e6:.1f} MB, {N} items")
stop = threading.Event(); during = []
t = threading.Thread(target=lambda: during.extend(item_latencies(stop=stop)))
t0 = time.perf_counter()
st, data, _ = req(c, "POST", "/process", body, token)
accepted = time.perf_counter() - t0
assert st == 202, (st, data)
job = json.loads(data)["job_id"]
t.start()
while True:
    st, data, _ = req(c, "GET", f"/jobs/{job}", token=token)
    j = json.loads(data)
    if j["status"] in ("succeeded", "failed"):
        break
    time.sleep(0.02)
wall = time.perf_counter() - t0
stop.set(); t.join()
parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
run = (parse(j["finished_at"]) - parse(j["started_at"])).total_seconds()
print(f"job {j['status']} attempts={j['attempts']} created={len(j['result']['created'])} rejected={len(j['result']['rejected'])}")
print(f"202 after {accepted*1000:.0f} ms; job ran {run:.2f}s => {N/run:,.0f} items/s; submit-to-done {wall:.2f}s => {N/wall:,.0f} items/s")
summary("POST /items during import", during)
st, data, _ = req(c, "GET", "/metrics")
for line in data.decode().splitlines():
    if line.startswith(("job_queue_depth", "jobs{", "job_duration_seconds_count", "job_duration_seconds_sum")):
        print("  ", line)
for line in open(f"/proc/{proc.pid}/status"):
    if line.startswith(("VmHWM", "VmRSS")):
        print("  ", line.strip())
proc.terminate(); proc.wait()
