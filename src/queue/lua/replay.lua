-- replay.lua — put a dead letter's operations back at the end of its contact's queue, in their order.
-- KEYS[1] dead letters hash   KEYS[2] the dead letter's operation list   KEYS[3] ready zset
-- KEYS[4] the contact's pending list   KEYS[5] its state hash   KEYS[6] pending operation counter
-- ARGV[1] dead letter id   ARGV[2] contact   ARGV[3] now (ms)
-- Returns the number of operations replayed, or -1 when there is no such dead letter.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local ops = redis.call('LRANGE', KEYS[2], 0, -1)
if #ops > 0 then
  redis.call('RPUSH', KEYS[4], unpack(ops))
  redis.call('INCRBY', KEYS[6], #ops)
  -- Replayed operations are live work: a contact waiting in the background lane comes forward (enqueue.lua).
  if redis.call('HDEL', KEYS[5], 'bg') == 1 then
    local score = redis.call('ZSCORE', KEYS[3], ARGV[2])
    if score and tonumber(score) >= 10000000000000 then
      redis.call('ZADD', KEYS[3], tonumber(score) - 10000000000000, ARGV[2])
    end
  end
  if redis.call('HEXISTS', KEYS[5], 'lease') == 0 then
    redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[3]), ARGV[2])
  end
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
return #ops
