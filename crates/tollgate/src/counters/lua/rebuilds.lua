-- tollgate counters, script version 1: rebuilds. The budget counters still
-- waiting for gateways to add what they hold (see seed.lua), with the time
-- each opens regardless; forgets those past it.
--
-- KEYS: the set of counters being rebuilt.
-- Reply: {key, open_at_ms, ...}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
