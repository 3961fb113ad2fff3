-- tollgate counters, script version 2: admit. Checks every limit of one
-- request and, only when all enforcing checks pass, takes them all. Mirrors
-- `MemoryCounters::admit` (memory.rs) and the rate math in gcra.rs: change
-- them together. Time comes from Redis `TIME`, so every gateway agrees.
--
-- KEYS: budget keys, rate keys, parallel keys, loop keys, streak keys, each
--       group in `AdmitRequest` order.
-- ARGV: cost, #budgets, #rates, #parallel, #loops, #streaks, request_id,
--       slot_ttl_ms, then
--       per budget:   limit, min, enforce (1/0), expires_at_ms (-1: never)
--       per rate:     limit_per_minute, amount, enforce
--       per parallel: max, enforce
--       per loop:     max_identical, window_ms, enforce
--       per streak:   enforce
--       then, in tests only, now_ms: replaces Redis `TIME` (a clock the test
--       moves); production never sends it.
-- Reply, rejected: {0, reason, index, retry_after_ms, limit, spent, reserved}
--   with reason 1 streak, 2 loop, 3 budget, 4 rate, 5 parallel, index 0-based.
-- Reply, admitted: {1, granted, (spent, reserved, epoch) per budget,
--   (remaining, reset_ms) per rate, #would_reject,
--   (reason, index, retry_after_ms, limit, spent, reserved) per would_reject}
-- Reply, unseeded: {2, #missing, index per missing budget (0-based)} when a
--   budget key does not exist (never seeded, Redis restarted empty, evicted):
--   nothing is checked or written; the caller seeds it from the ledger
--   (seed.lua) and calls again. A budget is never decided on a counter that
--   forgot its spend, and this script never creates one.
-- Reply, rebuilding: {3, wait_ms} when an enforcing budget's counter was
--   just re-seeded and still waits for live gateways to add what they hold
--   on it (seed.lua, contribute.lua): nothing is checked or written; the
--   caller adds its own amounts and calls again.
-- Loop keys are hashes: `until` (an attempt the guard refused blocks the body
--   until one window after it), `n` (the next slot) and slots `0`..`max-1`,
--   a ring of the times of the last `max` attempts that passed. An attempt
--   the guard refuses is still recorded (every loop check of the request
--   counts it), so a loop that keeps hammering stays stopped.

local WINDOW = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x)
  return string.format('%d', x)
end

local function ms_until(at)
  if at > now then
    return at - now
  end
  return 0
end

local cost = tonumber(ARGV[1])
local nb, nr, np = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nl, ns = tonumber(ARGV[5]), tonumber(ARGV[6])
local request_id = ARGV[7]
local slot_ttl = tonumber(ARGV[8])
local a, k = 9, 1

local budgets, rates, slots, loops, streaks = {}, {}, {}, {}, {}
for i = 1, nb do
  budgets[i] = { key = KEYS[k], limit = tonumber(ARGV[a]), min = tonumber(ARGV[a + 1]),
    enforce = ARGV[a + 2] == '1', expires = tonumber(ARGV[a + 3]) }
  k, a = k + 1, a + 4
end
for i = 1, nr do
  rates[i] = { key = KEYS[k], limit = tonumber(ARGV[a]), amount = tonumber(ARGV[a + 1]),
    enforce = ARGV[a + 2] == '1' }
  k, a = k + 1, a + 3
end
for i = 1, np do
  slots[i] = { key = KEYS[k], max = tonumber(ARGV[a]), enforce = ARGV[a + 1] == '1' }
  k, a = k + 1, a + 2
end
for i = 1, nl do
  loops[i] = { key = KEYS[k], max = tonumber(ARGV[a]), window = tonumber(ARGV[a + 1]),
    enforce = ARGV[a + 2] == '1' }
  k, a = k + 1, a + 3
end
for i = 1, ns do
  streaks[i] = { key = KEYS[k], enforce = ARGV[a] == '1' }
  k, a = k + 1, a + 1
end
if ARGV[a] then
  now = tonumber(ARGV[a])
end

-- One read per budget, up front: it is also the existence check (every
-- counter seed.lua writes has `spent`), and it tells the writes below which
-- of `limit`, `epoch` and the expiry (`exp`, as last set here) already hold.
local missing = {}
for i, b in ipairs(budgets) do
  b.h = redis.call('HMGET', b.key, 'spent', 'reserved', 'epoch', 'open', 'limit', 'exp')
  if not b.h[1] then
    missing[#missing + 1] = i - 1
  end
end
if #missing > 0 then
  local reply = { 2, #missing }
  for _, i in ipairs(missing) do
    reply[#reply + 1] = i
  end
  return reply
end

local would = {}
-- Returns a rejection reply for an enforcing check; records a non-enforcing one.
local function fail(enforce, reason, index, retry, limit, spent, reserved)
  local entry = { reason, index - 1, retry, limit or 0, spent or 0, reserved or 0 }
  if enforce then
    return { 0, entry[1], entry[2], entry[3], entry[4], entry[5], entry[6] }
  end
  would[#would + 1] = entry
  return nil
end

-- Nothing below writes until every check has passed.
for i, s in ipairs(streaks) do
  local tripped_until = tonumber(redis.call('HGET', s.key, 'until')) or 0
  if tripped_until > now then
    local r = fail(s.enforce, 1, i, tripped_until - now)
    if r then return r end
  end
end

-- Records this attempt in every loop check, as passed or refused.
local function count_loops()
  for _, l in ipairs(loops) do
    -- Nothing ever passes `max_identical: 0`: no state to keep.
    if l.max > 0 then
      if l.refused then
        redis.call('HSET', l.key, 'until', int(now + l.window))
      else
        redis.call('HSET', l.key, int(l.slot), int(now), 'n', int((l.slot + 1) % l.max))
      end
      redis.call('PEXPIRE', l.key, int(math.max(1, l.window)))
    end
  end
end

local loop_rejection = nil
for i, l in ipairs(loops) do
  local h = redis.call('HMGET', l.key, 'until', 'n')
  l.slot = 0
  l.refused = l.max == 0 or (tonumber(h[1]) or 0) > now
  if not l.refused then
    l.slot = (tonumber(h[2]) or 0) % l.max
    -- The slot to write next holds the oldest of the last `max` passed
    -- attempts once the ring is full: the `max`-th most recent.
    local oldest = tonumber(redis.call('HGET', l.key, int(l.slot)))
    l.refused = oldest ~= nil and oldest > now - l.window
  end
  if l.refused and not loop_rejection then
    loop_rejection = fail(l.enforce, 2, i, l.window)
  end
end
if loop_rejection then
  -- A refused attempt still counts: otherwise a loop that keeps hammering
  -- would pass again one window after its first refusal.
  count_loops()
  return loop_rejection
end

local granted = cost
local rebuilding = 0
for _, b in ipairs(budgets) do
  local h = b.h
  b.spent, b.reserved = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  b.epoch = h[3]
  local open = tonumber(h[4]) or 0
  if b.enforce and open > now then
    rebuilding = math.max(rebuilding, open - now)
  end
  b.remaining = math.max(0, b.limit - b.spent - b.reserved)
  if b.enforce and b.remaining < granted then
    granted = b.remaining
  end
end
if rebuilding > 0 then
  return { 3, rebuilding }
end
-- Blame the first enforcing budget that cannot fit its own minimum, else
-- (another budget clamped the grant below some minimum) the tightest one.
local blamed = nil
for i, b in ipairs(budgets) do
  if b.enforce and b.remaining < b.min then
    blamed = i
    break
  end
end
if not blamed then
  local short = false
  for _, b in ipairs(budgets) do
    if b.enforce and granted < b.min then short = true end
  end
  if short then
    for i, b in ipairs(budgets) do
      if b.enforce and (not blamed or b.remaining < budgets[blamed].remaining) then
        blamed = i
      end
    end
  end
end
local function budget_retry(b)
  if b.expires >= 0 then return ms_until(b.expires) end
  return 0
end
if blamed then
  local b = budgets[blamed]
  return fail(true, 3, blamed, budget_retry(b), b.limit, b.spent, b.reserved)
end
for i, b in ipairs(budgets) do
  if not b.enforce and (b.remaining < granted or b.remaining < b.min) then
    fail(false, 3, i, budget_retry(b), b.limit, b.spent, b.reserved)
  end
end

for i, r in ipairs(rates) do
  local h = redis.call('HMGET', r.key, 'level', 'last', 'limit')
  local level, last, old_limit = tonumber(h[1]) or 0, tonumber(h[2]) or now, tonumber(h[3]) or 0
  level = math.max(0, level - math.max(0, now - last) * old_limit)
  r.after = level
  local wait = nil
  if r.amount > 0 then
    if r.limit == 0 or r.amount > r.limit then
      wait = WINDOW
    else
      local after = level + r.amount * WINDOW
      local capacity = WINDOW * r.limit
      if after <= capacity then
        r.after = after
      else
        wait = math.ceil((after - capacity) / r.limit)
      end
    end
  end
  if wait then
    local rej = fail(r.enforce, 4, i, wait)
    if rej then return rej end
  else
    r.take = true
  end
end

for i, p in ipairs(slots) do
  local held = redis.call('ZCOUNT', p.key, '(' .. int(now), '+inf')
  if held >= p.max then
    -- No exact wait: a slot frees when some request finishes.
    local r = fail(p.enforce, 5, i, 1000)
    if r then return r end
  else
    p.take = true
  end
end

-- Every enforcing check passed: take them all.
local reply = { 1, granted }
for _, b in ipairs(budgets) do
  local reserved = redis.call('HINCRBY', b.key, 'reserved', int(granted))
  -- Fields and the expiry are written only when they change (a config
  -- reload, the first admit after a seed): the usual admit writes nothing
  -- but the reservation.
  local limit, exp = int(b.limit), int(b.expires)
  local changed = {}
  if b.h[5] ~= limit then
    changed[#changed + 1] = 'limit'
    changed[#changed + 1] = limit
  end
  if not b.epoch then
    -- A counter seeded before epochs existed: give it one (Redis time in
    -- microseconds, below 2^53 so it survives the trip as a number).
    b.epoch = t[1] .. string.format('%06d', tonumber(t[2]))
    changed[#changed + 1] = 'epoch'
    changed[#changed + 1] = b.epoch
  end
  if b.h[6] ~= exp then
    changed[#changed + 1] = 'exp'
    changed[#changed + 1] = exp
    if b.expires >= 0 then
      redis.call('PEXPIREAT', b.key, exp)
    else
      redis.call('PERSIST', b.key)
    end
  end
  if #changed > 0 then
    redis.call('HSET', b.key, unpack(changed))
  end
  reply[#reply + 1] = b.spent
  reply[#reply + 1] = reserved
  reply[#reply + 1] = tonumber(b.epoch)
end
for _, r in ipairs(rates) do
  if r.take and r.after > 0 then
    redis.call('HSET', r.key, 'level', int(r.after), 'last', int(now), 'limit', int(r.limit))
    redis.call('PEXPIRE', r.key, int(math.ceil(r.after / r.limit) + 1000))
  end
  if r.limit == 0 then
    reply[#reply + 1] = 0
    reply[#reply + 1] = 0
  else
    local capacity = WINDOW * r.limit
    reply[#reply + 1] = math.floor((capacity - math.min(r.after, capacity)) / WINDOW)
    reply[#reply + 1] = math.ceil(r.after / r.limit)
  end
end
for _, p in ipairs(slots) do
  if p.take then
    redis.call('ZREMRANGEBYSCORE', p.key, '-inf', int(now))
    redis.call('ZADD', p.key, int(now + slot_ttl), request_id)
    redis.call('PEXPIRE', p.key, int(slot_ttl))
  end
end
count_loops()
reply[#reply + 1] = #would
for _, w in ipairs(would) do
  for _, v in ipairs(w) do
    reply[#reply + 1] = v
  end
end
return reply
