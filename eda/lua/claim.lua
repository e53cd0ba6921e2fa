-- Lease a pending event to one sweeper: only a score already due can be pushed forward,
-- so of several sweepers racing for the same event exactly one wins.
--
-- KEYS: 1 pending set
-- ARGV: 1 event id, 2 now (ms), 3 lease end (ms)
-- Returns 1 when claimed, 0 otherwise.

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
