-- timers.lua — queue the removals of timed followers (a rule's `for`) that are due, each after what its
-- contact has pending, as live work.
-- KEYS[1] ready zset   KEYS[2] timers zset (contact \30 user -> due)   KEYS[3] pending operation counter
-- ARGV[1] now (ms)   ARGV[2] the partition's key prefix   ARGV[3] most timers to fire in one call
-- Returns the number of removals queued.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local fired = 0
for _, entry in ipairs(due) do
  redis.call('ZREM', KEYS[2], entry)
  local cut = string.find(entry, '\30', 1, true)
  local ck, user = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
  local ctimers = ARGV[2] .. 'ctimers:' .. ck
  local op = redis.call('HGET', ctimers, user)
  redis.call('HDEL', ctimers, user)
  if op then
    redis.call('RPUSH', ARGV[2] .. 'pending:' .. ck, op)
    redis.call('INCRBY', KEYS[3], 1)
    local state = ARGV[2] .. 'state:' .. ck
    -- Live work: a contact waiting in the background lane moves forward, keeping its time.
    if redis.call('HDEL', state, 'bg') == 1 then
      local score = redis.call('ZSCORE', KEYS[1], ck)
      if score and tonumber(score) >= 10000000000000 then
        redis.call('ZADD', KEYS[1], tonumber(score) - 10000000000000, ck)
      end
    end
    if redis.call('HEXISTS', state, 'lease') == 0 then
      redis.call('ZADD', KEYS[1], 'NX', now, ck)
    end
    fired = fired + 1
  end
end
return fired
