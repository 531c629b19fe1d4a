-- GET /items/{id} with ids drawn uniformly from BENCH_ID_MIN..BENCH_ID_MAX.
local lo = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local hi = tonumber(os.getenv("BENCH_ID_MAX") or "10000")
local threads_made = 0
function setup(thread)
  threads_made = threads_made + 1
  thread:set("tid", threads_made)
end
function init(args)
  math.randomseed(os.time() * 100 + (tid or 0))
end
function request()
  return wrk.format("GET", "/items/" .. math.random(lo, hi))
end
