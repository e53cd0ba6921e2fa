-- Publish one event atomically.
--
-- Every check comes before the first write: a refused publish writes nothing,
-- and once writing has started Redis runs the script to its end.
--
-- Chains are bounded here: an event caused by another is one deeper than its cause, and
-- every event of a correlation id counts against that chain's budget. An event past the
-- causation depth limit or its chain's budget is stored with status "blocked" and the
-- reason, and is not dispatched (neither pending nor handed to the dispatchers).
--
-- KEYS: 1 dedupe key, 2 global stream, 3 type stream, 4 event record, 5 pending set,
--       6 dispatch queue (a list the workers' dispatchers pop), 7 the chain's counter
--       (its correlation id's), 8 the cause's event record
-- ARGV: 1 event id, 2 event JSON, 3 event type, 4 dedupe TTL (s), 5 stream maxlen,
--       6 now (ms), 7 "1" when a dedupe key is given, 8 event record key prefix,
--       9 deliveries key prefix, 10 outcomes key prefix,
--       11 "1" to hand the event to the dispatchers (its id is pushed on the queue),
--       12 journal key prefix, 13 "1" when the event has a cause, 14 "1" when it has a
--       correlation id, 15 the causation depth limit, 16 the events a chain may hold,
--       17 the event's source, 18 its time (RFC 3339): with its type, what a history page
--       shows, kept beside the JSON so that a page never reads a payload
-- Returns {event id, stream id, duplicate (0|1), why it is blocked ("" when it is not)}.

local function type_of(key)
  return redis.call('TYPE', key)['ok']
end

local expected = {[1] = 'string', [2] = 'stream', [3] = 'stream', [5] = 'zset', [6] = 'list'}
for index, kind in pairs(expected) do
  local found = type_of(KEYS[index])
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('WRONGTYPE ' .. KEYS[index] .. ' holds a ' .. found .. ', not a ' .. kind)
  end
end

if ARGV[7] == '1' then
  local original = redis.call('GET', KEYS[1])
  if original then
    return {original, '', 1, ''}
  end
end

if type_of(KEYS[4]) ~= 'none' then
  return redis.error_reply('EXISTS event ' .. ARGV[1] .. ' is already stored')
end

local depth = 0
if ARGV[13] == '1' then
  -- A cause no longer stored (trimmed) counts as a root.
  depth = tonumber(redis.call('HGET', KEYS[8], 'depth') or '0') + 1
end

-- Writes from here on.
if ARGV[7] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
end
local blocked = ''
if depth > tonumber(ARGV[15]) then
  blocked = 'causation depth ' .. depth .. ' is over the limit of ' .. ARGV[15]
end
if ARGV[14] == '1' then
  local count = redis.call('INCR', KEYS[7])
  redis.call('EXPIRE', KEYS[7], ARGV[4])
  if blocked == '' and count > tonumber(ARGV[16]) then
    blocked = 'its chain (correlation id) holds ' .. count .. ' events, over its budget of ' .. ARGV[16]
  end
end
local sid = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'type', ARGV[3])
redis.call('XADD', KEYS[3], sid, 'id', ARGV[1])
if depth > 0 then
  redis.call('HSET', KEYS[4], 'depth', depth) -- a root event's 0 is not stored
end
redis.call('HSET', KEYS[4], 'type', ARGV[3], 'source', ARGV[17], 'time', ARGV[18])
if blocked ~= '' then
  redis.call('HSET', KEYS[4], 'data', ARGV[2], 'status', 'blocked', 'blocked', blocked,
             'sid', sid, 'at', ARGV[6])
else
  redis.call('HSET', KEYS[4], 'data', ARGV[2], 'status', 'pending', 'sid', sid, 'at', ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
  if ARGV[11] == '1' then
    redis.call('RPUSH', KEYS[6], ARGV[1])
  end
end

-- Retention: drop the oldest events past maxlen, records and all, a bounded batch a call.
local maxlen = tonumber(ARGV[5])
local excess = redis.call('XLEN', KEYS[2]) - maxlen
if excess > 0 then
  excess = math.min(excess, 1000)
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess + 1)
  local trimmed_types = {}
  for i = 1, excess do
    local fields = oldest[i][2]
    local id = fields[2]
    trimmed_types[fields[4]] = true
    redis.call('DEL', ARGV[8] .. id, ARGV[9] .. id, ARGV[10] .. id, ARGV[12] .. id)
    redis.call('ZREM', KEYS[5], id)
  end
  local first = oldest[excess + 1][1]
  redis.call('XTRIM', KEYS[2], 'MINID', first)
  redis.call('XTRIM', KEYS[3], 'MINID', first)
  -- Every type stream that held a dropped event is trimmed too: a stale entry left
  -- there would point at a deleted record and crowd live ones out of its history.
  -- (A type stream's key is the global stream's plus ':<type>', as keys.py builds it.)
  for event_type in pairs(trimmed_types) do
    redis.call('XTRIM', KEYS[2] .. ':' .. event_type, 'MINID', first)
  end
end

return {ARGV[1], sid, 0, blocked}
