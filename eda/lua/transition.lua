-- Move one delivery (event x handler) to a new status and re-derive the event's status.
--
-- KEYS: 1 deliveries hash of the event, 2 event record, 3 outcomes hash of the event
-- ARGV: 1 handler, 2 new status, 3 now (RFC 3339), 4 reason,
--       5 JSON object of fields to set on the delivery,
--       6 guard: "" (always), "fresh" (refuse when the delivery already succeeded or was
--         skipped), "undispatched" (refuse when a dispatch already recorded this delivery,
--         unless its enqueue failed), "unstarted" (refuse unless the delivery is queued:
--         a worker may already have started it),
--       7 task id: when given, refuse ("superseded") a delivery recorded for another task,
--       8 "1" to also return the event's data and the delivery's run count (when applied),
--       9 the handler's outcome as JSON, kept under the handler in KEYS 3 ("" for none)
-- Returns {previous status or "", event status, "ok" | "refused" | "superseded"}, and with
-- ARGV 8 once applied {..., event data, runs}: a worker starts a delivery in one call.
-- A move to running counts the run ("runs"), a move to queued starts the count afresh,
-- so a message whose worker keeps dying can be told from a new one.

if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('NOTFOUND event record ' .. KEYS[2] .. ' does not exist')
end

local handler, status, now, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local raw = redis.call('HGET', KEYS[1], handler)
local delivery
if raw then
  delivery = cjson.decode(raw)
else
  delivery = {handler = handler, attempts = 0, history = {}, created_at = now}
end
local previous = delivery.status or ''

local function refuse(why)
  return {previous, redis.call('HGET', KEYS[2], 'status'), why}
end
if ARGV[6] == 'fresh' and (previous == 'succeeded' or previous == 'skipped') then
  return refuse('refused')
end
if ARGV[6] == 'undispatched' and raw and not delivery.enqueue_failed then
  return refuse('refused')
end
if ARGV[6] == 'unstarted' and previous ~= 'queued' then
  return refuse('refused')
end
if ARGV[7] ~= '' and delivery.task_id and delivery.task_id ~= ARGV[7] then
  return refuse('superseded')
end
if status == 'running' then
  delivery.runs = (tonumber(delivery.runs) or 0) + 1
elseif status == 'queued' then
  delivery.runs = 0
end

if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[3], handler, ARGV[9])
end
for field, value in pairs(cjson.decode(ARGV[5])) do
  delivery[field] = value
end
delivery.status = status
delivery.updated_at = now
local history = delivery.history
table.insert(history, {status = status, at = now, reason = reason})
while #history > 50 do
  table.remove(history, 1)
end
redis.call('HSET', KEYS[1], handler, cjson.encode(delivery))

-- The event's status follows from all of its deliveries, unless an operator set it by hand.
local counts = {}
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  local s = cjson.decode(value).status
  counts[s] = (counts[s] or 0) + 1
end
local derived
if (counts.running or 0) + (counts.retrying or 0) > 0 then
  derived = 'processing'
elseif (counts.queued or 0) > 0 then
  derived = 'queued'
elseif (counts.dead or 0) > 0 then
  derived = 'failed'
elseif (counts.succeeded or 0) > 0 then
  derived = 'succeeded'
else
  derived = 'skipped'
end
redis.call('HSET', KEYS[2], 'derived', derived)
if redis.call('HEXISTS', KEYS[2], 'ack') == 0 then
  redis.call('HSET', KEYS[2], 'status', derived)
end
local current = redis.call('HGET', KEYS[2], 'status')
if ARGV[8] == '1' then
  return {previous, current, 'ok', redis.call('HGET', KEYS[2], 'data'), delivery.runs or 0}
end
return {previous, current, 'ok'}
