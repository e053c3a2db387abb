-- enqueue.lua — store a batch of events' follower operations, once per event id, in one partition.
-- KEYS[1] ready zset (contact -> ready_at)   KEYS[2] pending operation counter
-- KEYS[3..] per event, three keys: seen marker, pending list, state hash; then round-robin cursors
-- ARGV[1] now (ms)   ARGV[2] de-duplication window (ms)   ARGV[3] number of events
-- then per event: contact member, number of operations, "1" for background work (a reconcile) or "0", and
-- per operation either
--   the operation's JSON, encoded by the caller (it starts with "{"), or
--   "rr", cursor KEYS index, JSON before the user, JSON after the user, pool size, pool users (JSON-escaped)
-- Returns one integer per event: -1 when its id was seen within the window, else the operations stored.
-- Every key shares the partition's hash tag (see keys.rs), so the script runs on Redis Cluster.
-- Kept lean on purpose: no cjson, one RPUSH per event, ZADD NX; this is the webhook path's only write.
-- Lanes: a background contact waits at its time plus OFFSET (after every live one; state field bg = 1, set
-- while every pending operation is background); live work brings it forward, keeping its time.
local OFFSET = 10000000000000
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local events = tonumber(ARGV[3])
local results = {}
local a = 4
for i = 1, events do
  local seen, pending, state = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local member = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local background = ARGV[a + 2] == '1'
  a = a + 3
  -- The value is when the id may be accepted again, by the caller's clock (as in the embedded queue); the
  -- key's own TTL only cleans up.
  local duplicate = tonumber(redis.call('GET', seen) or '0') > now
  local ops = {}
  for _ = 1, count do
    if ARGV[a] == 'rr' then
      local size = tonumber(ARGV[a + 4])
      if not duplicate then
        -- Round robin: the cursor advances only when the pick is stored, in this same script.
        local position = redis.call('INCR', KEYS[tonumber(ARGV[a + 1])]) - 1
        ops[#ops + 1] = ARGV[a + 2] .. ARGV[a + 5 + (position % size)] .. ARGV[a + 3]
      end
      a = a + 5 + size
    else
      ops[#ops + 1] = ARGV[a]
      a = a + 1
    end
  end
  if duplicate then
    results[i] = -1
  else
    redis.call('SET', seen, now + ttl, 'PX', ttl)
    if #ops > 0 then
      local had = redis.call('LLEN', pending)
      redis.call('RPUSH', pending, unpack(ops))
      redis.call('INCRBY', KEYS[2], #ops)
      local lane = 0
      if background then
        if had == 0 then redis.call('HSET', state, 'bg', '1') end
        if redis.call('HGET', state, 'bg') == '1' then lane = OFFSET end
      elseif redis.call('HDEL', state, 'bg') == 1 then
        local score = redis.call('ZSCORE', KEYS[1], member)
        if score and tonumber(score) >= OFFSET then redis.call('ZADD', KEYS[1], tonumber(score) - OFFSET, member) end
      end
      -- A leased contact becomes ready again at its ack; a ready one keeps its place in line (NX).
      if redis.call('HEXISTS', state, 'lease') == 0 then
        redis.call('ZADD', KEYS[1], 'NX', now + lane, member)
      end
    end
    results[i] = #ops
  end
end
return results
