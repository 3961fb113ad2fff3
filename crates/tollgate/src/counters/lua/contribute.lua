-- tollgate counters, script version 1: contribute. One gateway adds to a
-- budget counter's epoch what it holds on it that the epoch lacks (its
-- requests in flight, its settled rows the seed's ledger snapshot missed),
-- and stops being waited for; the last gateway waited for opens the
-- counter (see seed.lua). Or, when the gateway names the counter's epoch
-- as suspect (a settlement whose outcome is unknown, spend taken on local
-- counters), deletes it so the next request rebuilds it from the ledger.
--
-- KEYS: the budget key, the set of counters being rebuilt.
-- ARGV: writer, expected epoch, suspect epoch ('0': none, 'any'),
--       reserved to add, spent to add.
-- Reply: {0} no counter, {1} added, {2} deleted as suspect, {3} the
--   epoch is no longer the expected one (nothing done).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 0 }
end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local suspect = ARGV[3]
if suspect == 'any' or suspect == epoch then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return { 2 }
end
if epoch ~= ARGV[2] then
  return { 3 }
end
if ARGV[4] ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[4])
end
if ARGV[5] ~= '0' then
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[5])
end
if redis.call('HDEL', KEYS[1], 'w:' .. ARGV[1]) == 1
    and redis.call('HINCRBY', KEYS[1], 'waiting', -1) <= 0 then
  redis.call('HSET', KEYS[1], 'open', 0)
  redis.call('ZREM', KEYS[2], KEYS[1])
end
return { 1 }
