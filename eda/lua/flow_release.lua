-- Give back a concurrency slot, and hand free slots to parked deliveries (oldest first).
-- The sweep calls it with no member to hand out slots whose leases expired.
--
-- KEYS: 1 leases (sorted set), 2 parked (list of waiter JSON), 3 scopes with slots held or deliveries parked (hash: scope -> limit)
-- ARGV: 1 member ("" for none), 2 now, 3 lease end of a handed slot, 4 limit (0: the one
--       recorded in KEYS 3), 5 scope
-- Returns the waiter JSON of each parked delivery handed a slot (to be sent again).

if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local limit = tonumber(ARGV[4])
if limit == 0 then
  limit = tonumber(redis.call('HGET', KEYS[3], ARGV[5]) or '0')
end
local woken = {}
while redis.call('ZCARD', KEYS[1]) < limit do
  local waiter = redis.call('LPOP', KEYS[2])
  if not waiter then
    break
  end
  redis.call('ZADD', KEYS[1], ARGV[3], cjson.decode(waiter).member)
  table.insert(woken, waiter)
end
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('HDEL', KEYS[3], ARGV[5])
end
return woken
