-- Take tokens from several token buckets at once: from all of them, or from none.
--
-- KEYS[1..n]      the buckets (hashes: tokens, ts)
-- KEYS[n+1..2n]   each bucket's adaptive rate state (hash: current, since); read only
--                 for buckets marked adaptive
-- ARGV[1]         '1' to only look (nothing is taken or written)
-- ARGV[2], [3]    adaptive recovery per minute (fraction of the configured rate), floor
-- ARGV[4 + 4(i-1) ..]  per bucket: rate, capacity, cost, adaptive ('1' or '0')
--
-- Time is Redis's own (TIME), so replicas with skewed clocks share one notion of it.
-- Returns {allowed (1/0), retry_after, limiting bucket index (0 if none),
--          tokens_1..tokens_n, rate_1..rate_n, capacity_1..capacity_n}; numbers as
--          strings, since Redis would
--          truncate Lua floats to integers.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local n = #KEYS / 2
local dry = ARGV[1] == '1'
local recovery = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])

local tokens, rates, capacities, costs = {}, {}, {}, {}
local allowed, retry_after, limiting = true, 0, 0

for i = 1, n do
  local at = 4 + 4 * (i - 1)
  local rate = tonumber(ARGV[at])
  local capacity = tonumber(ARGV[at + 1])
  local cost = tonumber(ARGV[at + 2])
  if ARGV[at + 3] == '1' then
    local state = redis.call('HMGET', KEYS[n + i], 'current', 'since')
    if state[1] then
      local minutes = math.max(0, now - tonumber(state[2])) / 60
      local current = math.min(rate, tonumber(state[1]) + rate * recovery * minutes)
      current = math.max(current, rate * floor)
      capacity = math.max(1, capacity * current / rate)
      rate = current
    end
  end
  local bucket = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local level = capacity
  if bucket[1] then
    level = math.min(capacity, tonumber(bucket[1]) + math.max(0, now - tonumber(bucket[2])) * rate)
  end
  tokens[i], rates[i], capacities[i], costs[i] = level, rate, capacity, cost
  if level < cost then
    local wait = (cost - level) / rate
    if allowed then limiting = i end
    allowed = false
    if wait > retry_after then retry_after = wait end
  end
end

if allowed and not dry then
  for i = 1, n do
    tokens[i] = tokens[i] - costs[i]
    redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
    -- Once full again the bucket reads the same as a missing one: let it go.
    local full_in = (capacities[i] - tokens[i]) / rates[i]
    redis.call('PEXPIRE', KEYS[i], math.ceil(full_in * 1000) + 1000)
  end
end

local reply = {allowed and 1 or 0, tostring(retry_after), limiting}
for i = 1, n do reply[#reply + 1] = tostring(tokens[i]) end
for i = 1, n do reply[#reply + 1] = tostring(rates[i]) end
for i = 1, n do reply[#reply + 1] = tostring(capacities[i]) end
return reply
