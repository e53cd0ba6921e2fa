-- Say that the broker took a delivery's message: clear its enqueue_failed flag, while the
-- delivery is still queued for that task (a worker that started it cleared the flag itself).
--
-- KEYS: 1 deliveries hash of the event
-- ARGV: 1 handler, 2 task id
-- Returns 1 when the flag was cleared, else 0.

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local delivery = cjson.decode(raw)
if delivery.status ~= 'queued' or delivery.task_id ~= ARGV[2] or not delivery.enqueue_failed then
  return 0
end
delivery.enqueue_failed = nil -- false is not stored (delivery.lua)
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(delivery))
return 1
