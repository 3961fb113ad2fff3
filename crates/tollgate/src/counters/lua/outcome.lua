-- tollgate counters, script version 2: record_outcome. Counts a key's run of
-- identical error codes and trips the key for one window when the run
-- passes `max` within a window of its start. Mirrors
-- `MemoryCounters::record_outcome` (memory.rs).
--
-- KEYS: the streak key.
-- ARGV: error code ('' for success), max, window_ms.
-- Reply: 1 when this call tripped the key, else 0.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x)
  return string.format('%d', x)
end

local key, code = KEYS[1], ARGV[1]
local max, window = tonumber(ARGV[2]), tonumber(ARGV[3])

local h = redis.call('HMGET', key, 'code', 'count', 'start', 'until')
if code == '' then
  -- Written only when there is a streak to end.
  if h[2] and (h[2] ~= '0' or h[1] ~= '') then
    redis.call('HSET', key, 'code', '', 'count', 0)
  end
  return 0
end
local count, start, tripped_until = tonumber(h[2]) or 0, tonumber(h[3]) or now, tonumber(h[4]) or 0
if count > 0 and h[1] == code and now < start + window then
  count = count + 1
else
  count, start = 1, now
end
local tripped = 0
local stored_code = code
if count > max and tripped_until <= now then
  tripped_until = now + window
  -- The next trip needs a fresh streak of its own.
  count, stored_code, tripped = 0, '', 1
end
redis.call('HSET', key, 'code', stored_code, 'count', int(count), 'start', int(start), 'until', int(tripped_until))
redis.call('PEXPIRE', key, int(math.max(1, math.max(tripped_until, start + window) - now)))
return tripped
