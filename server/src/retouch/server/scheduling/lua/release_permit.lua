-- Give a holder's permit back.
--
-- KEYS[1]  the permits (sorted set: holder id -> lease expiry)
-- ARGV[1]  holder id
--
-- Returns 1 when the holder held one.

return redis.call('ZREM', KEYS[1], ARGV[1])
