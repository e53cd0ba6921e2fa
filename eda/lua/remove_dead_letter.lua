-- Remove a dead letter and its place in the index.
--
-- KEYS: 1 the dead letter, 2 the dead-letter index (sorted set)
-- ARGV: 1 dead letter id
-- Returns 1 when removed, 0 when there was none.

local removed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return removed
