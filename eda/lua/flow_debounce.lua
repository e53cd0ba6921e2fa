-- Debounce: register a delivery's event for its key and say whether it runs, waits, or was
-- coalesced into a newer event.
--
-- KEYS: 1 the key's burst (hash: latest, latest_ms, first, last; and ran, ran_ms: the
--       event that ran last, kept so that an older event of its burst that comes late,
--       its message slower than the others, is coalesced into it instead of running)
-- ARGV: 1 event id, 2 the event's time (ms), 3 now (s), 4 period (s), 5 timeout (s)
-- Returns {"run", "0"}, {"wait", seconds} or {"coalesced", the newer event's id}.

local now, period, timeout = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local burst = redis.call('HMGET', KEYS[1], 'latest', 'latest_ms', 'first', 'last', 'ran', 'ran_ms')
local ttl = math.ceil((timeout + period) * 1000) + 60000
local mine = tonumber(ARGV[2])

local function older(id, ms, than_id, than_ms)
  return ms < than_ms or (ms == than_ms and id < than_id)
end

if not burst[1] then
  if burst[5] and burst[5] ~= ARGV[1] and older(ARGV[1], mine, burst[5], tonumber(burst[6])) then
    return {'coalesced', burst[5]}
  end
  redis.call('HSET', KEYS[1], 'latest', ARGV[1], 'latest_ms', ARGV[2], 'first', ARGV[3], 'last', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'wait', string.format('%.6f', period)}
end
if burst[1] ~= ARGV[1] then
  if older(burst[1], tonumber(burst[2]), ARGV[1], mine) then
    redis.call('HSET', KEYS[1], 'latest', ARGV[1], 'latest_ms', ARGV[2], 'last', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ttl)
    return {'wait', string.format('%.6f', period)}
  end
  return {'coalesced', burst[1]}
end
local due = math.min(tonumber(burst[4]) + period, tonumber(burst[3]) + timeout)
if now >= due then
  redis.call('HDEL', KEYS[1], 'latest', 'latest_ms', 'first', 'last')
  redis.call('HSET', KEYS[1], 'ran', ARGV[1], 'ran_ms', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'run', '0'}
end
return {'wait', string.format('%.6f', due - now)}
