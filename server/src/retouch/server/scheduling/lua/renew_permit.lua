-- Extend a holder's lease on its permit while its provider call runs.
--
-- KEYS[1]  the permits (sorted set: holder id -> lease expiry, ms of Redis TIME)
-- ARGV     holder id, lease (ms)
--
-- Returns 1 when renewed, 0 when the holder no longer held a permit (its lease had
-- run out and another acquire reclaimed it).

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local holder, lease = ARGV[1], tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], holder)
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], holder)
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + lease, holder)
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
