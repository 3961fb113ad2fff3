-- tollgate counters, script version 2: settle. Moves a grant's reservation
-- to the actual cost on every budget, corrects tokens rate limits to the
-- actual tokens, frees the request's parallel slots and, for a success,
-- ends the key's error streaks (as outcome.lua does for code ''), so that a
-- successful request costs one script call, not two. Mirrors
-- `MemoryCounters::settle` (memory.rs), gcra.rs and `Counters::settle_success`.
--
-- A budget counter releases the reservation only if it is the epoch that
-- holds it (a counter re-seeded since never had it), and adds the cost
-- only if the ledger snapshot it was seeded from did not hold the row
-- already (the row's number above the writer's mark `m:<writer>`).
--
-- KEYS: budget keys, tokens-rate keys, parallel keys, streak keys.
-- ARGV: reserved, actual_cost, actual_tokens, request_id, #budgets,
--       #rates, #parallel, #streaks, writer, ledger_seq (0: no row), then
--       per budget: the epoch holding the reservation ('0': none, '': any),
--       per rate: limit_per_minute, reserved amount.
-- Reply: per budget, the counter's epoch (0: no counter).

local WINDOW = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x)
  return string.format('%d', x)
end

local reserved, actual_cost = ARGV[1], ARGV[2]
local actual_tokens = tonumber(ARGV[3])
local request_id = ARGV[4]
local nb, nr, np = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ns = tonumber(ARGV[8])
local writer, seq = ARGV[9], tonumber(ARGV[10])
local k, a = 1, 11

local epochs = {}
for i = 1, nb do
  local key, held = KEYS[k], ARGV[a]
  epochs[i] = 0
  -- A counter that expired meanwhile belongs to a finished period; one
  -- lost meanwhile gets this from the gateway when it is rebuilt.
  -- `spent` doubles as the existence check: every counter has it.
  local h = redis.call('HMGET', key, 'epoch', 'm:' .. writer, 'spent')
  if h[3] then
    local epoch = h[1] or ''
    -- Redis does not parse `-0` as an integer.
    if (held == '' or held == epoch) and reserved ~= '0'
        and redis.call('HINCRBY', key, 'reserved', '-' .. reserved) < 0 then
      redis.call('HSET', key, 'reserved', 0)
    end
    if seq == 0 or seq > (tonumber(h[2]) or 0) then
      redis.call('HINCRBY', key, 'spent', actual_cost)
    end
    epochs[i] = tonumber(epoch) or 0
  end
  k, a = k + 1, a + 1
end

for _ = 1, nr do
  local key, limit, amount = KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local h = redis.call('HMGET', key, 'level', 'last', 'limit')
  local level, last, old_limit = tonumber(h[1]) or 0, tonumber(h[2]) or now, tonumber(h[3]) or 0
  level = math.max(0, level - math.max(0, now - last) * old_limit)
  -- Never below zero: a refund cannot create credit beyond capacity.
  if actual_tokens >= amount then
    level = level + (actual_tokens - amount) * WINDOW
  else
    level = math.max(0, level - (amount - actual_tokens) * WINDOW)
  end
  if level > 0 and limit > 0 then
    redis.call('HSET', key, 'level', int(level), 'last', int(now), 'limit', int(limit))
    redis.call('PEXPIRE', key, int(math.ceil(level / limit) + 1000))
  else
    redis.call('DEL', key)
  end
  k, a = k + 1, a + 2
end

for _ = 1, np do
  redis.call('ZREM', KEYS[k], request_id)
  k = k + 1
end

for _ = 1, ns do
  -- Written only when there is a streak to end: most successes follow one.
  local h = redis.call('HMGET', KEYS[k], 'code', 'count')
  if h[2] and (h[2] ~= '0' or h[1] ~= '') then
    redis.call('HSET', KEYS[k], 'code', '', 'count', 0)
  end
  k = k + 1
end
return epochs
