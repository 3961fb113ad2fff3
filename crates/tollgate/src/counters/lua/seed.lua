-- tollgate counters, script version 2: seed_budget. Sets a budget counter's
-- spend only when the counter does not exist, in one step, so a gateway
-- restoring spend from the ledger never overwrites live counts. Each seed
-- starts a new epoch of the counter (see settle.lua).
--
-- A counter rebuilt after a loss records each ledger writer's mark (the
-- number of its last row in the snapshot `spent` was summed from), and
-- admits nothing (admit.lua answers 3) until every live gateway named in
-- the waiting list has added what it holds on the counter
-- (contribute.lua), or `wait_ms` has passed for gateways that died.
--
-- KEYS: the budget key, the set of counters being rebuilt.
-- ARGV: spent, expires_at_ms (-1: never), epoch, wait_ms, #marks,
--       (writer, seq) per mark, #waiting, writer per waiting gateway.
-- Reply: 1 when the counter was created, else 0.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0, 'limit', 0, 'epoch', ARGV[3])
local nm = tonumber(ARGV[5])
local a = 6
for _ = 1, nm do
  redis.call('HSET', KEYS[1], 'm:' .. ARGV[a], ARGV[a + 1])
  a = a + 2
end
local nw = tonumber(ARGV[a])
a = a + 1
if nw > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local open = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'open', string.format('%d', open), 'waiting', nw)
  for _ = 1, nw do
    redis.call('HSET', KEYS[1], 'w:' .. ARGV[a], 1)
    a = a + 1
  end
  redis.call('ZADD', KEYS[2], string.format('%d', open), KEYS[1])
end
if tonumber(ARGV[2]) >= 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
