-- A worker's broker bookkeeping in one step (tasks/broker.py): forget the messages it
-- acknowledged, record as unacknowledged the messages BRPOP gave it, and take up to
-- ARGV[2] more from its lanes, each recorded as unacknowledged before the script ends,
-- in kombu's own layout (the hash KEYS[1]: tag -> [message, exchange, routing key], and
-- the index KEYS[2]: tag scored by when it was taken), which kombu's restore reads.
--
-- KEYS[1] unacked hash, KEYS[2] unacked index, KEYS[3..] the lanes' lists, highest
--   priority first, ARGV[3] lanes to each priority (kombu's BRPOP order)
-- ARGV[1] now (epoch seconds), ARGV[2] how many to take, ARGV[3] lanes per priority,
-- ARGV[4] n, ARGV[5 .. 4+n] the tags acknowledged, then the messages BRPOP took, as it
--   gave them
-- Returns {list, message, list, message, ...}: the messages taken, in the order taken.
local now, wanted, width, acked = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

if acked > 0 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 5, 4 + acked))
  redis.call('HDEL', KEYS[1], unpack(ARGV, 5, 4 + acked))
end

-- A message recorded as kombu records it; one that is not kombu's JSON is returned as it
-- came, for kombu's decoding to refuse as it does a BRPOP's.
local function record(message)
  local ok, decoded = pcall(cjson.decode, message)
  if not ok or type(decoded) ~= 'table' or type(decoded.properties) ~= 'table' then
    return
  end
  local properties = decoded.properties
  local info = type(properties.delivery_info) == 'table' and properties.delivery_info or {}
  local tag = properties.delivery_tag
  if type(tag) ~= 'string' then
    return
  end
  redis.call('ZADD', KEYS[2], now, tag)
  redis.call('HSET', KEYS[1], tag,
    '[' .. message .. ',' .. cjson.encode(info.exchange) .. ',' .. cjson.encode(info.routing_key) .. ']')
end

for i = 5 + acked, #ARGV do
  record(ARGV[i])
end

-- Nothing to take (as when BRPOP just took the one message there was): one command.
if wanted > 0 and #KEYS > 2 and redis.call('EXISTS', unpack(KEYS, 3)) == 0 then
  wanted = 0
end

-- Priority by priority; within one, a message from each lane in turn (a busy lane does
-- not hold back the others), a lane left once it is empty.
local taken = {}
local count = 0
local first = 3
while first <= #KEYS and count < wanted do
  local lanes = {}
  for k = first, math.min(first + width - 1, #KEYS) do
    lanes[#lanes + 1] = KEYS[k]
  end
  while #lanes > 0 and count < wanted do
    local left = {}
    for _, lane in ipairs(lanes) do
      if count >= wanted then
        break
      end
      local message = redis.call('RPOP', lane)
      if message then
        record(message)
        taken[#taken + 1] = lane
        taken[#taken + 1] = message
        count = count + 1
        left[#left + 1] = lane
      end
    end
    lanes = left
  end
  first = first + width
end
return taken
