-- Take one of a provider's shared permits for a holder, if one is free.
--
-- KEYS[1]  the permits (sorted set: holder id -> lease expiry, ms of Redis TIME)
-- ARGV     holder id, limit, lease (ms)
--
-- Holders whose lease ran out (a replica that died) are dropped first, in this same
-- atomic step, so a dead replica's permits come back without anyone's help. Time is
-- Redis's own, never the replicas'. Returns 1 when the holder now holds a permit.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local holder, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], holder) and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, holder)
redis.call('PEXPIRE', KEYS[1], lease)
return 1
