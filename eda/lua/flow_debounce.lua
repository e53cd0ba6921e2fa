-- Debounce: register a delivery's event for its key and say whether it runs, waits, or was
-- coalesced into a newer event.
--
-- KEYS: 1 the key's burst (hash: latest, latest_ms, first, last)
-- ARGV: 1 event id, 2 the event's time (ms), 3 now (s), 4 period (s), 5 timeout (s)
-- Returns {"run", "0"}, {"wait", seconds} or {"coalesced", the newer event's id}.

local now, period, timeout = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local burst = redis.call('HMGET', KEYS[1], 'latest', 'latest_ms', 'first', 'last')
local ttl = math.ceil((timeout + period) * 1000) + 60000
if not burst[1] then
  redis.call('HSET', KEYS[1], 'latest', ARGV[1], 'latest_ms', ARGV[2], 'first', ARGV[3], 'last', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'wait', string.format('%.6f', period)}
end
if burst[1] ~= ARGV[1] then
  local mine, theirs = tonumber(ARGV[2]), tonumber(burst[2])
  if mine > theirs or (mine == theirs and ARGV[1] > burst[1]) then
    redis.call('HSET', KEYS[1], 'latest', ARGV[1], 'latest_ms', ARGV[2], 'last', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ttl)
    return {'wait', string.format('%.6f', period)}
  end
  return {'coalesced', burst[1]}
end
local due = math.min(tonumber(burst[4]) + period, tonumber(burst[3]) + timeout)
if now >= due then
  redis.call('DEL', KEYS[1])
  return {'run', '0'}
end
return {'wait', string.format('%.6f', due - now)}
