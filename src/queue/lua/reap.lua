-- reap.lua — return expired leases to the ready set; their operations were never removed, so they are
-- delivered again from the front, in order.
-- KEYS[1] ready zset   KEYS[2] leases zset
-- ARGV[1] now (ms)   ARGV[2] the partition's key prefix   ARGV[3] most leases to reap in one call
-- Returns the number of leases reaped.
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, ck in ipairs(expired) do
  redis.call('ZREM', KEYS[2], ck)
  redis.call('HDEL', ARGV[2] .. 'state:' .. ck, 'lease', 'deadline')
  redis.call('ZADD', KEYS[1], now, ck)
end
return #expired
