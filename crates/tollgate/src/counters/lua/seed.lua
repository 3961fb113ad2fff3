-- tollgate counters, script version 2: seed_budget. Sets a budget counter's
-- spend only when the counter does not exist, in one step, so a gateway
-- restoring spend from the ledger never overwrites live counts.
--
-- KEYS: the budget key.
-- ARGV: spent, expires_at_ms (-1: never).
-- Reply: 1 when the counter was created, else 0.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0, 'limit', 0)
if tonumber(ARGV[2]) >= 0 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
