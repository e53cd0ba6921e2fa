-- Append entries to an agent run's journal, within the run's size bound.
--
-- The journal of an event is one hash (deleted with the event's record when retention
-- trims it, by publish.lua); a run's entries are the fields "<run key>#1", "#2", ...,
-- with "<run key>#n" their count and "<run key>#bytes" their size.
--
-- KEYS: 1 the event's journal hash, 2 the event record
-- ARGV: 1 run key ("<handler>#<run>"), 2 most bytes a run's journal holds, 3... the entries'
--       JSON, in order
-- Returns {last entry's number, bytes used}; {0, bytes used} when an entry would pass the
-- bound (it and those after it are not written; those before it are).

if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('NOTFOUND event record ' .. KEYS[2] .. ' does not exist')
end
local base = ARGV[1]
local bound = tonumber(ARGV[2])
local used = tonumber(redis.call('HGET', KEYS[1], base .. '#bytes') or '0')
local n = 0
for i = 3, #ARGV do
  if used + #ARGV[i] > bound then
    return {0, used}
  end
  n = redis.call('HINCRBY', KEYS[1], base .. '#n', 1)
  redis.call('HSET', KEYS[1], base .. '#' .. n, ARGV[i])
  used = redis.call('HINCRBY', KEYS[1], base .. '#bytes', #ARGV[i])
end
return {n, used}
