-- Set fields of an event record that exists, and take the event out of pending or not.
-- A record deleted by retention is not recreated half-empty.
--
-- KEYS: 1 event record, 2 pending set, 3 deliveries hash of the event
-- ARGV: 1 event id, 2 "1" to remove the event from pending, then field/value pairs
-- Returns the status the event had, or false when the record does not exist.
--
-- Taken out of pending with no fields to set (dispatched):
-- - an event with a delivery whose message no broker is known to have taken
--   (enqueue_failed: a dispatch recorded it, and may have died before sending it)
--   stays pending, for the sweeper;
-- - an event that was marked pending while waiting (mark_undispatched) gets back the
--   status its deliveries derive, unless an operator acknowledged it.

local previous = redis.call('HGET', KEYS[1], 'status')
if not previous then
  return false
end
local dispatched = ARGV[2] == '1' and #ARGV == 2
if dispatched then
  for _, raw in ipairs(redis.call('HVALS', KEYS[3])) do
    if cjson.decode(raw).enqueue_failed then
      return previous
    end
  end
end
if #ARGV > 2 then
  -- A status the deliveries derived (no operator's, none held apart already) is kept
  -- as 'derived' before another replaces it: delivery.lua stores it only then.
  if previous ~= 'pending' and redis.call('EXISTS', KEYS[3]) == 1
      and redis.call('HEXISTS', KEYS[1], 'ack') == 0 then
    redis.call('HSETNX', KEYS[1], 'derived', previous)
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if dispatched and previous == 'pending' and redis.call('HEXISTS', KEYS[1], 'ack') == 0 then
    local derived = redis.call('HGET', KEYS[1], 'derived')
    if derived then
      redis.call('HSET', KEYS[1], 'status', derived)
      redis.call('HDEL', KEYS[1], 'derived')
    end
  end
end
return previous
