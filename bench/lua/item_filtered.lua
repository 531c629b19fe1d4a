-- GET /items filtered and sorted (issue 20): one of BENCH_OWNERS' items under a random
-- price, in a random one of three sorts, 20 per page. Owners x prices x sorts make
-- thousands of distinct pages, so the read cache answers few of them: this measures the
-- indexed keyset query (migration 0007), not the cache.
local owners = {}
for id in string.gmatch(os.getenv("BENCH_OWNERS") or "1", "[^,]+") do
  owners[#owners + 1] = id
end
local sorts = {"price", "-price", "-created_at"}
local threads_made = 0
function setup(thread)
  threads_made = threads_made + 1
  thread:set("tid", threads_made)
end
function init(args)
  math.randomseed(os.time() * 100 + (tid or 0))
end
function request()
  local owner = owners[math.random(1, #owners)]
  local max_price = math.random(10, 990) / 10
  local sort = sorts[math.random(1, #sorts)]
  return wrk.format("GET", "/items?owner_id=" .. owner .. "&min_price=1&max_price=" .. max_price
    .. "&sort=" .. sort .. "&limit=20")
end
