-- The mixed load of bench/load.sh: reads, writes, logins, rate-limited calls and job
-- submissions, chosen at random per request. Counts answers by status class per thread;
-- done() prints one JSON line (LOAD-RESULT) that bench/bench.py checks.
local lo = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local hi = tonumber(os.getenv("BENCH_ID_MAX") or "10000")
local token = os.getenv("BENCH_TOKEN") or ""
local email = os.getenv("BENCH_EMAIL") or ""
local password = os.getenv("BENCH_PASSWORD") or ""
local clients = tonumber(os.getenv("BENCH_CLIENTS") or "2000")
local login_every = tonumber(os.getenv("BENCH_LOGIN_PERMILLE") or "2")
local job_every = tonumber(os.getenv("BENCH_JOB_PERMILLE") or "5")

local json_auth = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local auth = { ["Authorization"] = "Bearer " .. token }
local login_body = "username=" .. email:gsub("@", "%%40") .. "&password=" .. password
local item_body = '{"name":"load item","price":1.25,"quantity":2}'
local job_body = '{"kind":"import_items","items":[{"name":"job a","price":1},{"name":"job b","price":2},{"name":"","price":-1}]}'

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(os.time() * 100 + (tid or 0))
  s2, s3, s4, s429, s5, other = 0, 0, 0, 0, 0, 0
end

function request()
  local r = math.random(1, 1000)
  if r <= login_every then
    return wrk.format("POST", "/auth/token", form, login_body)
  elseif r <= login_every + job_every then
    return wrk.format("POST", "/process", json_auth, job_body)
  elseif r <= 500 then
    return wrk.format("GET", "/items/" .. math.random(lo, hi))
  elseif r <= 600 then
    return wrk.format("GET", "/items?limit=20")
  elseif r <= 750 then
    return wrk.format("POST", "/items", json_auth, item_body)
  elseif r <= 900 then
    return wrk.format("GET", "/api/data", { ["client"] = "load-" .. math.random(1, clients) })
  elseif r <= 950 then
    return wrk.format("GET", "/protected", auth)
  else
    return wrk.format("GET", "/healthz")
  end
end

function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1
  elseif status == 429 then s429 = s429 + 1
  elseif status >= 400 then s4 = s4 + 1
  elseif status >= 300 then s3 = s3 + 1
  elseif status >= 200 then s2 = s2 + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local t = { s2 = 0, s3 = 0, s4 = 0, s429 = 0, s5 = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    '\nLOAD-RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"2xx":%d,"3xx":%d,"4xx":%d,"429":%d,"5xx":%d,"other":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, t.s2, t.s3, t.s4, t.s429, t.s5, t.other))
end
