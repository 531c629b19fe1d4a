-- One GCRA step for one client, atomic because Redis runs a script alone, and timed by
-- Redis's own clock so that processes on hosts with skewed clocks still agree.
--
-- KEYS[1]  the client's key; its value is the theoretical arrival time (TAT), in µs
-- ARGV[1]  the emission interval T (window / requests), in µs
-- ARGV[2]  the burst (requests per window)
--
-- Returns {allowed (1 or 0), remaining, µs}: for an allowed request the time until the quota
-- is whole again, for a refused one the time until the next request may pass.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- GET answers false for a missing key: a new (or expired) client starts with a whole quota.
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end

local earliest = tat - tolerance
if now < earliest then
  return {0, 0, earliest - now}
end

local next_tat = tat + interval
-- '%d' because Lua 5.1 prints numbers with 14 significant digits, and µs since 1970 have 16.
-- The key lives exactly as long as it differs from a fresh one, so idle clients cost nothing.
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((now + tolerance - tat) / interval), next_tat - now}
