-- One step of a delivery's lifecycle (event x handler), and the event's status derived anew.
-- Which steps are legal from which status is decided in eda/delivery.py and passed in
-- (ARGV 5); this script applies one step atomically, with what must not be seen half done:
-- a handler's outcome, and on a move to dead the dead letter.
--
-- KEYS: 1 deliveries hash of the event, 2 event record, 3 outcomes hash of the event,
--       4 dead-letter index (sorted set), 5 the dead letter's key, 6 the in-flight index
--       (sorted set of "<event id> <handler>" queued, running or retrying, by last step),
--       7 the due set (sorted set of the same members, by when a held retry is due),
--       8 the models' pauses (sorted set: model -> until, epoch seconds), 9 the event's
--       journal hash, 10 and 11 (finish with ``spend`` only) the agent's token and cost
--       counts of the day
-- ARGV: 1 handler, 2 step: queue | skip | start | finish | note, 3 now (RFC 3339),
--       4 reason, 5 statuses the step is legal from, comma-separated ("new": no record),
--       6 status after the step, 7 task id (queue: the new one; others: the expected one,
--       "" for any), 8 JSON options (below), 9 the handler's outcome as JSON ("" none),
--       10 the dead letter as JSON ("" none), 11... (finish with ``journal``) entries of the
--       run's journal, in order (see journal.lua)
-- Options: parked (note: waiting with no message), held (note: what it waits for), new_run, replay, enqueue_failed (queue, note), only_unsent (queue: a queued
--   delivery is taken only while its message is unsent), expect_task (queue: only while
--   the delivery still belongs to that task), expect_updated (queue: only while its last
--   step is still the one read at that time: not started again meanwhile), worker (start), attempt (finish:
--   the attempt it ends), error {class, message, traceback} (finish), max_attempts,
--   max_runs (what is kept), letter_id, letter_score (dead letter), take_letter (queue:
--   remove the dead letter that task left, "" whichever is there), member and now_ms
--   (the delivery in the in-flight index, and its score), due (finish to retrying, note
--   to waiting: the time in ms when the delivery is sent again from the store, with
--   ``carry``, what its next pass is given; it has no message meanwhile), pause_model and
--   pause_at (start: refused as "paused" while that model's pause lasts past pause_at, epoch
--   seconds), spend {tokens, cost, kept} (finish: what the attempt used, added to the day's
--   counts, KEYS 10 and 11, kept that many seconds; counted whatever the step's verdict,
--   but once), journal {run, max} (finish: ARGV 11... appended to that run's journal within
--   its bound of max bytes, as journal.lua does, whatever the step's verdict, but once).
-- Returns {previous status or "new", event status, "ok" | "refused" | "superseded" | "paused"}
-- (paused adds the seconds the pause has left, as a string); a
-- start that was applied adds {event data, attempt number, times this attempt started, run},
-- a queue that took a dead letter adds {the letter as JSON, its score} (for a revert).
--
-- The record (its field: the handler): {status, task_id, replay, enqueue_failed,
--   created_at, updated_at, dropped_runs, runs: [{number, reason, at, replay, count, dropped_attempts,
--   notes: [{at, status, reason, after (the attempts started before it)}], attempts: [{number, task_id, worker, started_at,
--   starts, ended_at, duration_ms, status, reason, error}]}]}; the flags (replay,
--   enqueue_failed) only when true, the counts (dropped runs and attempts, a note's after)
--   only when not 0, starts only when not 1, count only when not what started() reads,
--   an attempt's task_id only when not the record's.
-- An attempt's outcome is kept in KEYS 3 under "<handler>#<run>.<attempt>".

if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('NOTFOUND event record ' .. KEYS[2] .. ' does not exist')
end

local handler, step, now, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local target, task_id = ARGV[6], ARGV[7]
local options = cjson.decode(ARGV[8])
local raw = redis.call('HGET', KEYS[1], handler)
local delivery = raw and cjson.decode(raw) or nil
local previous = delivery and delivery.status or 'new'

-- The same finish sent again (its reply was lost on the way back): its attempt has ended
-- already, under this task, as this step ends it; what it spent and journaled is not
-- written twice.
local function resent()
  if step ~= 'finish' or not delivery or delivery.task_id ~= task_id then
    return false
  end
  local runs = delivery.runs
  local run = type(runs) == 'table' and runs[#runs] or nil
  local attempts = type(run) == 'table' and run.attempts or nil
  local attempt = type(attempts) == 'table' and attempts[#attempts] or nil
  return type(attempt) == 'table' and attempt.number == options.attempt
    and type(attempt.ended_at) == 'string' and attempt.status == target
end

if (options.spend or options.journal) and not resent() then
  -- What the attempt used and the run's last entries, held by the handler until its end:
  -- written whatever becomes of the record, as they were before the step.
  local spend = options.spend
  if spend and spend.tokens and spend.tokens > 0 then
    redis.call('INCRBY', KEYS[10], spend.tokens)
    redis.call('EXPIRE', KEYS[10], spend.kept)
  end
  if spend and spend.cost and spend.cost > 0 then
    -- Not INCRBYFLOAT: inside a script, Redis 6.2 rewrites its arguments for the AOF in a
    -- way that corrupted the script engine's memory (the next script call crashed it).
    local cost = tonumber(redis.call('GET', KEYS[11]) or '0') + spend.cost
    redis.call('SET', KEYS[11], string.format('%.17g', cost), 'EX', spend.kept)
  end
  if options.journal then
    local base, bound = options.journal.run, options.journal.max
    local used = tonumber(redis.call('HGET', KEYS[9], base .. '#bytes') or '0')
    for i = 11, #ARGV do
      if used + #ARGV[i] > bound then
        break
      end
      local n = redis.call('HINCRBY', KEYS[9], base .. '#n', 1)
      redis.call('HSET', KEYS[9], base .. '#' .. n, ARGV[i])
      used = redis.call('HINCRBY', KEYS[9], base .. '#bytes', #ARGV[i])
    end
  end
end

local function refuse(why)
  return {previous, redis.call('HGET', KEYS[2], 'status'), why}
end

local legal = false
for status in string.gmatch(ARGV[5], '[^,]+') do
  if status == previous then
    legal = true
  end
end
if not legal then
  return refuse('refused')
end
if step == 'queue' and options.only_unsent and previous == 'queued' and not delivery.enqueue_failed then
  return refuse('refused')
end
if step ~= 'queue' and task_id ~= '' and delivery and delivery.task_id ~= task_id then
  return refuse('superseded')
end
if options.expect_task and delivery and delivery.task_id ~= options.expect_task then
  return refuse('superseded')
end
if options.expect_updated and delivery and delivery.updated_at ~= options.expect_updated then
  return refuse('superseded')
end
if step == 'start' and options.pause_model then
  -- A model that asked every caller to wait (a 429 or 529 with retry-after): not started.
  local paused = tonumber(redis.call('ZSCORE', KEYS[8], options.pause_model) or '0')
  if paused > options.pause_at then
    local reply = refuse('paused')
    table.insert(reply, string.format('%.6f', paused - options.pause_at))
    return reply
  end
end

-- cjson reads an empty list back as an object: lists are lists again here.
local function list(value)
  if type(value) ~= 'table' or next(value) == nil then
    return {}
  end
  return value
end

-- Attempts a run has started: stored only when its attempts kept and dropped do not say.
local function started(r)
  return r.count or (#list(r.attempts) + (r.dropped_attempts or 0))
end

local function outcome_field(run, attempt)
  return handler .. '#' .. run.number .. '.' .. attempt.number
end

local function drop_run(run)
  for _, attempt in ipairs(list(run.attempts)) do
    redis.call('HDEL', KEYS[3], outcome_field(run, attempt))
  end
end

if not delivery then
  delivery = {created_at = now}
end
local runs = list(delivery.runs)
delivery.runs = runs
local run = runs[#runs]
if not run and step ~= 'queue' and step ~= 'skip' then
  -- A record of the shape before runs were kept: its history starts here.
  run = {number = 1, reason = 'recorded before runs were kept', at = now, replay = false,
         count = tonumber(delivery.attempts) or 0, dropped_attempts = 0, attempts = {}, notes = {}}
  table.insert(runs, run)
end

local function note(status, why)
  local notes = list(run.notes)
  table.insert(notes, {at = now, status = status, reason = why, after = started(run)})
  while #notes > 20 do
    table.remove(notes, 1)
  end
  run.notes = notes
end

local result = {}
if step == 'queue' or step == 'skip' then
  if options.new_run or not run then
    run = {number = run and run.number + 1 or 1, reason = reason, at = now,
           replay = options.replay or false, count = 0, dropped_attempts = 0,
           attempts = {}, notes = {}}
    table.insert(runs, run)
    while #runs > (options.max_runs or 10) do
      drop_run(table.remove(runs, 1))
      delivery.dropped_runs = (delivery.dropped_runs or 0) + 1
    end
  end
  note(target, reason)
  if step == 'queue' then
    -- An attempt under the task the record names leaves its task id out: it is written
    -- back into each attempt before the record names another task.
    for _, each in ipairs(runs) do
      for _, attempt in ipairs(list(each.attempts)) do
        attempt.task_id = attempt.task_id or delivery.task_id
      end
    end
    delivery.task_id = task_id
    if options.replay ~= nil then
      delivery.replay = options.replay
    elseif delivery.replay == nil then
      delivery.replay = false
    end
    delivery.enqueue_failed = options.enqueue_failed or false
    if options.take_letter ~= nil then
      -- A retry from the dead-letter queue: the letter goes in the step that queues the
      -- delivery, so no crash leaves a queued delivery beside its dead letter.
      local letter = redis.call('GET', KEYS[5])
      if letter and (options.take_letter == '' or cjson.decode(letter).task_id == options.take_letter) then
        result = {letter, redis.call('ZSCORE', KEYS[4], options.letter_id)}
        redis.call('DEL', KEYS[5])
        redis.call('ZREM', KEYS[4], options.letter_id)
      elseif not letter then
        redis.call('ZREM', KEYS[4], options.letter_id)
      end
    end
  end
elseif step == 'start' then
  local attempts = list(run.attempts)
  run.attempts = attempts
  local attempt = attempts[#attempts]
  if attempt and not attempt.ended_at then
    -- The attempt never recorded an end: its worker died, or could not reach the store,
    -- and the message came back (or recovery sent a new one). The same attempt starts
    -- again; it spends none of the retry budget.
    attempt.starts = (attempt.starts or 1) + 1
  else
    run.count = started(run) + 1
    attempt = {number = run.count, task_id = delivery.task_id, starts = 1}
    table.insert(attempts, attempt)
    while #attempts > (options.max_attempts or 20) do
      redis.call('HDEL', KEYS[3], outcome_field(run, table.remove(attempts, 1)))
      run.dropped_attempts = (run.dropped_attempts or 0) + 1
    end
  end
  attempt.started_at = now
  attempt.worker = options.worker
  delivery.enqueue_failed = false
  result = {redis.call('HGET', KEYS[2], 'data'), attempt.number, attempt.starts, run.number}
elseif step == 'finish' then
  local attempts = list(run.attempts)
  local attempt = attempts[#attempts]
  if not attempt or attempt.ended_at or attempt.number ~= options.attempt then
    return refuse('superseded')
  end
  attempt.ended_at = now
  attempt.duration_ms = options.duration_ms
  attempt.status = target
  attempt.reason = reason
  attempt.error = options.error
  if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[3], outcome_field(run, attempt), ARGV[9])
  end
else -- note: a change that is not an attempt (an enqueue that failed, a discard, a wait)
  local notes = list(run.notes)
  local last = notes[#notes]
  if previous == target and last and last.status == target and last.reason == reason then
    last.at = now -- the same wait again: one note, counted
    last.times = (last.times or 1) + 1
  else
    note(target, reason)
  end
  if options.enqueue_failed ~= nil then
    delivery.enqueue_failed = options.enqueue_failed
  end
end
delivery.parked = options.parked or nil
if options.due then
  redis.call('ZADD', KEYS[7], options.due, options.member)
elseif delivery.due then
  redis.call('ZREM', KEYS[7], options.member)
end
delivery.due = options.due
delivery.carry = options.carry
delivery.held = (options.held ~= nil and options.held ~= '') and options.held or nil
if ARGV[10] ~= '' then
  redis.call('SET', KEYS[5], ARGV[10])
  redis.call('ZADD', KEYS[4], options.letter_score, options.letter_id)
end

delivery.status = target
delivery.updated_at = now
delivery.history = nil -- the shape before runs were kept
-- What a reader knows without it is not stored: the handler (the record's field name), a
-- flag that is false, a count that is 0, an attempt's one start and the record's task id,
-- a run's count of attempts started when its attempts say it (eda/delivery.py reads them
-- so): 200 bytes of a record of one attempt.
delivery.handler = nil
if not delivery.replay then delivery.replay = nil end
if not delivery.enqueue_failed then delivery.enqueue_failed = nil end
if delivery.dropped_runs == 0 then delivery.dropped_runs = nil end
for _, each in ipairs(runs) do
  if each.count == #list(each.attempts) + (each.dropped_attempts or 0) then each.count = nil end
  if not each.replay then each.replay = nil end
  if each.dropped_attempts == 0 then each.dropped_attempts = nil end
  for _, attempt in ipairs(list(each.attempts)) do
    if attempt.starts == 1 then attempt.starts = nil end
    if attempt.task_id == delivery.task_id then attempt.task_id = nil end
  end
  for _, entry in ipairs(list(each.notes)) do
    if entry.after == 0 then entry.after = nil end
  end
end
redis.call('HSET', KEYS[1], handler, cjson.encode(delivery))
local member = options.member
if target == 'queued' or target == 'running' or target == 'retrying' or target == 'waiting' then
  -- A delivery held until due enters recovery's window only then.
  redis.call('ZADD', KEYS[6], options.due or options.now_ms, member)
else
  redis.call('ZREM', KEYS[6], member)
end

-- The event's status follows from all of its deliveries, unless an operator set it by hand.
local counts = {}
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  local s = cjson.decode(value).status
  counts[s] = (counts[s] or 0) + 1
end
local derived
if (counts.running or 0) + (counts.retrying or 0) > 0 then
  derived = 'processing'
elseif (counts.queued or 0) + (counts.waiting or 0) > 0 then
  derived = 'queued'
elseif (counts.dead or 0) > 0 then
  derived = 'failed'
elseif (counts.stopped or 0) > 0 then
  derived = 'stopped'
elseif (counts.succeeded or 0) > 0 then
  derived = 'succeeded'
else
  derived = 'skipped'
end
-- The status is the derived one; only an event whose status is held apart (acknowledged
-- by an operator, or marked pending until dispatched: set_status.lua) stores 'derived'.
local held = redis.call('HMGET', KEYS[2], 'ack', 'derived', 'status')
local status = held[3]
if held[1] then
  if held[2] ~= derived then
    redis.call('HSET', KEYS[2], 'derived', derived)
  end
else
  if status ~= derived then
    redis.call('HSET', KEYS[2], 'status', derived)
    status = derived
  end
  if held[2] then
    redis.call('HDEL', KEYS[2], 'derived')
  end
end
local reply = {previous, status, 'ok'}
for _, value in ipairs(result) do
  table.insert(reply, value)
end
return reply
