-- POST /items as the bench user (bearer token from BENCH_TOKEN).
local token = os.getenv("BENCH_TOKEN") or ""
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
local body = '{"name":"bench item","description":"made by wrk","price":9.5,"quantity":3}'
function request()
  return wrk.format("POST", "/items", headers, body)
end
