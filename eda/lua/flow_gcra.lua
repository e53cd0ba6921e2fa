-- A rate limit (GCRA): may a delivery start now, and if not, when?
-- A delivery over the rate reserves the next slot (the theoretical arrival time moves on),
-- so waiting deliveries come back one interval apart instead of all at once.
--
-- KEYS: 1 the theoretical arrival time of the next delivery (seconds, as text)
-- ARGV: 1 now (s), 2 interval (s), 3 "1" to reserve nothing when over the rate (drop)
-- Returns the seconds to wait, as text ("0": start now).

local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local wait = tat - now
if wait > 0 and ARGV[3] == '1' then
  return tostring(wait)
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return string.format('%.6f', wait)
