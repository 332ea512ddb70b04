-- Halve a provider's adaptive upstream rate after it said "too many requests".
--
-- KEYS[1]  the adaptive rate state (hash: current, since)
-- ARGV     configured rate, recovery per minute (fraction of it), floor (fraction of it)
--
-- The rate recovers linearly from `current` at `since` (Redis TIME); every replica
-- reads the same state, so a 429 seen by one slows them all. Returns the new rate.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate = tonumber(ARGV[1])
local recovery = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])

local current = rate
local state = redis.call('HMGET', KEYS[1], 'current', 'since')
if state[1] then
  local minutes = math.max(0, now - tonumber(state[2])) / 60
  current = math.min(rate, tonumber(state[1]) + rate * recovery * minutes)
end
local halved = math.max(rate * floor, current / 2)
redis.call('HSET', KEYS[1], 'current', tostring(halved), 'since', tostring(now))
-- Fully recovered, the state reads the same as none at all.
local recovered_in = (rate - halved) / (rate * recovery) * 60
redis.call('EXPIRE', KEYS[1], math.ceil(recovered_in) + 60)
return tostring(halved)
