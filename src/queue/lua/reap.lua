-- reap.lua — return expired leases to the ready set; their operations were never removed, so they are
-- delivered again from the front, in order.
-- KEYS[1] ready zset   KEYS[2] leases zset
-- ARGV[1] now (ms)   ARGV[2] the partition's key prefix   ARGV[3] most leases to reap in one call
-- Returns the number of leases reaped.
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, ck in ipairs(expired) do
  local state = ARGV[2] .. 'state:' .. ck
  redis.call('ZREM', KEYS[2], ck)
  redis.call('HDEL', state, 'lease', 'deadline')
  -- Back in its lane: background contacts wait after the live ones (see enqueue.lua).
  local lane = 0
  if redis.call('HGET', state, 'bg') == '1' then lane = 10000000000000 end
  redis.call('ZADD', KEYS[1], now + lane, ck)
end
return #expired
