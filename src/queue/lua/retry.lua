-- retry.lua — give a lease back with its operations kept in front, ready again at a later time.
-- KEYS[1] ready zset   KEYS[2] leases zset   KEYS[3] the contact's state hash
-- ARGV[1] contact   ARGV[2] lease id   ARGV[3] when it is ready again (ms)
-- Returns 1, or -1 when the lease is no longer held.
if redis.call('HGET', KEYS[3], 'lease') ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[3], 'lease', 'deadline')
redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('ZREM', KEYS[2], ARGV[1])
-- Back in its lane: background contacts wait after the live ones (see enqueue.lua).
local lane = 0
if redis.call('HGET', KEYS[3], 'bg') == '1' then lane = 10000000000000 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + lane, ARGV[1])
return 1
