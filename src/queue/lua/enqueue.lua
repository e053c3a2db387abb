-- enqueue.lua — store a batch of events' follower operations, once per event id, in one partition.
-- KEYS[1] ready zset (contact -> ready_at)   KEYS[2] operation sequence counter
-- KEYS[3] pending operation counter           KEYS[4..] the keys named by index in ARGV[3]
-- ARGV[1] now (ms)   ARGV[2] de-duplication window (ms)
-- ARGV[3] JSON array of events: {"id", "ck", "seen": i, "pending": i, "state": i,
--         "ops": [{"op", "user"?, "rule", "pool"?: [user...], "cursor"?: i}]}   (i: an index into KEYS)
-- Returns one integer per event: -1 when its id was seen within the window, else the operations stored.
-- Every key shares the partition's hash tag (see keys.rs), so the script runs on Redis Cluster.
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local events = cjson.decode(ARGV[3])
local results = {}
for i, ev in ipairs(events) do
  -- The value is when the id may be accepted again, by the caller's clock (as in the embedded queue); the
  -- key's own TTL only cleans up.
  local seen_until = tonumber(redis.call('GET', KEYS[ev.seen]) or '0')
  if seen_until > now then
    results[i] = -1
  else
    redis.call('SET', KEYS[ev.seen], now + ttl, 'PX', ttl)
    local stored = 0
    for _, op in ipairs(ev.ops) do
      local user = op.user
      if op.pool then
        -- Round robin: the cursor advances only when the pick is stored, in the same script.
        local position = redis.call('INCR', KEYS[op.cursor]) - 1
        user = op.pool[(position % #op.pool) + 1]
      end
      local seq = redis.call('INCR', KEYS[2])
      local entry = {seq = seq, op = op.op, user = user, rule = op.rule, event_id = ev.id, enqueued_at = now}
      redis.call('RPUSH', KEYS[ev.pending], cjson.encode(entry))
      stored = stored + 1
    end
    if stored > 0 then
      redis.call('INCRBY', KEYS[3], stored)
      -- A leased contact becomes ready again at its ack; a ready one keeps its place in line.
      if redis.call('HEXISTS', KEYS[ev.state], 'lease') == 0 and not redis.call('ZSCORE', KEYS[1], ev.ck) then
        redis.call('ZADD', KEYS[1], now, ev.ck)
      end
    end
    results[i] = stored
  end
end
return results
