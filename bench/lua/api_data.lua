-- GET /api/data with a `client` header rotating over BENCH_CLIENTS (default 100,000) values;
-- each thread starts at its own offset so threads do not walk the same clients together.
local clients = tonumber(os.getenv("BENCH_CLIENTS") or "100000")
local threads_made = 0
local n = 0
function setup(thread)
  threads_made = threads_made + 1
  thread:set("tid", threads_made)
end
function init(args)
  n = ((tid or 0) * 7919 * 13) % clients
end
function request()
  n = (n + 1) % clients
  return wrk.format("GET", "/api/data", { ["client"] = "client-" .. n })
end
