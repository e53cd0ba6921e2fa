-- Remove a dead letter, optionally only if it is still the one a given task left behind.
--
-- KEYS: 1 the dead letter, 2 the dead-letter index (sorted set)
-- ARGV: 1 dead letter id, 2 task id ("" removes whatever is there)
-- Returns 1 when removed, 0 otherwise.

local raw = redis.call('GET', KEYS[1])
if not raw then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] ~= '' and cjson.decode(raw).task_id ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
