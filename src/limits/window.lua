-- One step of a fixed-window counter (limits/throttle.rs), atomic because Redis runs a
-- script alone: a window starts with a key's first event and the key expires with it.
--
-- KEYS[1]  the counter's key
-- ARGV[1]  'count' adds one event, 'peek' only reads, 'clear' forgets the key
-- ARGV[2]  the window, in ms
--
-- Returns {events in the current window, ms left in it}.
if ARGV[1] == 'clear' then
  redis.call('DEL', KEYS[1])
  return {0, 0}
end
local events
if ARGV[1] == 'count' then
  events = redis.call('INCR', KEYS[1])
  if events == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
else
  events = tonumber(redis.call('GET', KEYS[1])) or 0
end
local left = redis.call('PTTL', KEYS[1])
if left == -1 then
  -- A key without an expiry would block forever; give it one window.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
if left < 0 then
  left = 0
end
return {events, left}
