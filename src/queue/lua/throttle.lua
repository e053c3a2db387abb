-- throttle.lua — take calls from a location's rate budget, shared by every process (see deliver/limit.rs:
-- the same arithmetic as domain/rate.rs: a GCRA whose tolerance is 0 except for live deliveries, and a count
-- per UTC day).
-- KEYS[1] the location's limiter hash (tat, day, count)
-- ARGV[1] now (ms)   ARGV[2] ms between two calls   ARGV[3] calls per day   ARGV[4] calls wanted
-- ARGV[5] how far ahead of the schedule (ms) these calls may go
-- Returns 0 when the calls may go now (they are reserved), else when to ask again (ms).
local now, spacing, daily, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5] or '0')
local day_ms = 86400000
local day = math.floor(now / day_ms)
local state = redis.call('HMGET', KEYS[1], 'tat', 'day', 'count')
local tat, seen_day, count = tonumber(state[1] or '0'), tonumber(state[2] or '-1'), tonumber(state[3] or '0')
if seen_day ~= day then count = 0 end
if count + cost > daily then return (day + 1) * day_ms end
if tat < now then tat = now end
if tat > now + tolerance then return tat - tolerance end
redis.call('HSET', KEYS[1], 'tat', tat + spacing * cost, 'day', day, 'count', count + cost)
redis.call('PEXPIRE', KEYS[1], 2 * day_ms)
return 0
