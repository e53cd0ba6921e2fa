-- Note an annotation on a dead letter (who judged it, and why), keeping the rest of it.
--
-- KEYS: 1 the dead letter
-- ARGV: 1 the annotation as JSON
-- Returns 1 when annotated, 0 when there is no such letter (retried or discarded meanwhile).

local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local letter = cjson.decode(raw)
letter.annotation = cjson.decode(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(letter))
return 1
