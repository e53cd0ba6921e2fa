-- Append one entry to an agent run's journal, within the run's size bound.
--
-- The journal of an event is one hash (deleted with the event's record when retention
-- trims it, by publish.lua); a run's entries are the fields "<run key>#1", "#2", ...,
-- with "<run key>#n" their count and "<run key>#bytes" their size.
--
-- KEYS: 1 the event's journal hash, 2 the event record
-- ARGV: 1 run key ("<handler>#<run>"), 2 entry JSON, 3 most bytes a run's journal holds
-- Returns {entry number, bytes used}; {0, bytes used} when the entry would pass the bound
-- (nothing is written).

if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('NOTFOUND event record ' .. KEYS[2] .. ' does not exist')
end
local base = ARGV[1]
local used = tonumber(redis.call('HGET', KEYS[1], base .. '#bytes') or '0')
if used + #ARGV[2] > tonumber(ARGV[3]) then
  return {0, used}
end
local n = redis.call('HINCRBY', KEYS[1], base .. '#n', 1)
redis.call('HSET', KEYS[1], base .. '#' .. n, ARGV[2])
used = redis.call('HINCRBY', KEYS[1], base .. '#bytes', #ARGV[2])
return {n, used}
