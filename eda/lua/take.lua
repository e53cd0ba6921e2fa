-- A relay's read of one batch: take ids handed over for dispatch, the events among them
-- still pending, and the subscriptions, in one step (one round trip instead of four).
-- An id taken by a relay that dies before dispatching stays pending, for the sweeper.
--
-- KEYS: 1 the dispatch queue (list), 2 the subscriptions hash
-- ARGV: 1 most ids to take, 2 the event key prefix, 3... ids already taken (by a BLPOP)
-- Returns {ids taken, oldest first; the data of the events among them still pending;
--   the subscriptions as JSON}.

local ids = {}
for index = 3, #ARGV do
  table.insert(ids, ARGV[index])
end
local more = tonumber(ARGV[1]) - #ids
if more > 0 then
  for _, id in ipairs(redis.call('LPOP', KEYS[1], more) or {}) do
    table.insert(ids, id)
  end
end
local pending = {}
for _, id in ipairs(ids) do
  local record = redis.call('HMGET', ARGV[2] .. id, 'status', 'data')
  if record[1] == 'pending' and record[2] then
    table.insert(pending, record[2])
  end
end
return {ids, pending, redis.call('HVALS', KEYS[2])}
