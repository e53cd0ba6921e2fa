-- Take a concurrency slot, or park the delivery until one is handed to it.
-- Slots are leases that expire, so a killed worker's slot comes back by itself; free slots
-- go to parked deliveries first (oldest first), then to the caller.
--
-- KEYS: 1 leases (sorted set: member -> lease end), 2 parked (list of waiter JSON),
--       3 scopes with slots held or deliveries parked (hash: scope -> limit)
-- ARGV: 1 member (the delivery), 2 now, 3 lease end, 4 limit, 5 this delivery's waiter JSON
--       (with its member), 6 scope
-- Returns {1 | 0 (parked), waiter JSON of each parked delivery handed a slot}.

local limit = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local woken = {}
while redis.call('ZCARD', KEYS[1]) < limit do
  local waiter = redis.call('LPOP', KEYS[2])
  if not waiter then
    break
  end
  redis.call('ZADD', KEYS[1], ARGV[3], cjson.decode(waiter).member)
  table.insert(woken, waiter)
end
local taken = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  taken = 1 -- it holds a slot already (handed to it, or its attempt restarted)
elseif redis.call('ZCARD', KEYS[1]) < limit then
  taken = 1
else
  if not redis.call('LPOS', KEYS[2], ARGV[5]) then
    redis.call('RPUSH', KEYS[2], ARGV[5])
  end
end
if taken == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
-- The scope is listed while anything holds or waits for one of its slots (the stats and
-- the sweep go through the list).
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('HSET', KEYS[3], ARGV[6], limit)
else
  redis.call('HDEL', KEYS[3], ARGV[6])
end
local reply = {taken}
for _, waiter in ipairs(woken) do
  table.insert(reply, waiter)
end
return reply
