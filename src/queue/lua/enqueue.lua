-- enqueue.lua — store a batch of events' follower operations, once per event id, in one partition.
-- KEYS[1] ready zset (contact -> ready_at)   KEYS[2] pending operation counter
-- KEYS[3..] per event, three keys: seen marker, pending list, state hash; then round robins' standings hashes
-- ARGV[1] now (ms)   ARGV[2] de-duplication window (ms)   ARGV[3] number of events
-- then per event: contact member, number of operations, "1" for background work (a reconcile) or "0", and
-- per operation either
--   the operation's JSON, encoded by the caller (it starts with "{"), or
--   "rr", standings KEYS index, JSON before the user, JSON after the user, team size, "1" for catch_up or
--   "0", then per member its user id (JSON-escaped), weight, and "1" when away now (skipped, unless everyone
--   is) or "0"
-- Returns one integer per event: -1 when its id was seen within the window, else the operations stored.
-- Every key shares the partition's hash tag (see keys.rs), so the script runs on Redis Cluster.
-- Kept lean on purpose: no cjson, one RPUSH per event, ZADD NX; this is the webhook path's only write.
-- Lanes: a background contact waits at its time plus OFFSET (after every live one; state field bg = 1, set
-- while every pending operation is background); live work brings it forward, keeping its time.
local OFFSET = 10000000000000
-- A round robin's standings hash: field TEAM_WEIGHT is the team's total weight when last settled, and one
-- field per member (its user id, JSON-escaped) holds its credit. The arithmetic is domain/pick.rs's, step for
-- step (settle, gain, pick the most credit, pay back), so both stores pick alike.
local TEAM_WEIGHT = '\31w'

local function round(x)
  if x >= 0 then return math.floor(x + 0.5) end
  return -math.floor(-x + 0.5)
end

local function pick(key, users, weights, away, catch_up)
  local n = #users
  local total = 0
  local member = {}
  for j = 1, n do
    total = total + weights[j]
    member[users[j]] = true
  end
  local stored = redis.call('HGETALL', key)
  local credit, settled = {}, 0
  for j = 1, #stored, 2 do
    if stored[j] == TEAM_WEIGHT then
      settled = tonumber(stored[j + 1])
    elseif member[stored[j]] then
      credit[stored[j]] = tonumber(stored[j + 1])
    else
      redis.call('HDEL', key, stored[j])
    end
  end
  if settled > 0 and settled ~= total then
    for user, c in pairs(credit) do credit[user] = round(c * total / settled) end
  end
  local sum = 0
  for j = 1, n do sum = sum + (credit[users[j]] or 0) end
  if sum ~= 0 then
    local each = math.floor(sum / n)
    local rest = sum - each * n
    for j = 1, n do
      local share = each
      if j <= rest then share = share + 1 end
      credit[users[j]] = (credit[users[j]] or 0) - share
    end
  end
  -- Who takes part: the members not away; everyone when all are. They gain, and one of them is picked; with
  -- catch_up, who is away gains too (and gets the picks they missed once back).
  local present = 0
  for j = 1, n do if not away[j] then present = present + 1 end end
  local chosen, handed_out = nil, 0
  for j = 1, n do
    local eligible = present == 0 or not away[j]
    if eligible or catch_up then
      credit[users[j]] = (credit[users[j]] or 0) + weights[j]
      handed_out = handed_out + weights[j]
    end
    if eligible and (chosen == nil or credit[users[j]] > credit[users[chosen]]) then chosen = j end
  end
  credit[users[chosen]] = credit[users[chosen]] - handed_out
  local fields = { TEAM_WEIGHT, total }
  for j = 1, n do
    fields[#fields + 1] = users[j]
    fields[#fields + 1] = credit[users[j]] or 0
  end
  redis.call('HSET', key, unpack(fields))
  return users[chosen]
end
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
        -- Round robin: the standings change only when the pick is stored, in this same script.
        local users, weights, away = {}, {}, {}
        local catch_up = ARGV[a + 5] == '1'
        for j = 1, size do
          users[j] = ARGV[a + 3 + 3 * j]
          weights[j] = tonumber(ARGV[a + 4 + 3 * j])
          away[j] = ARGV[a + 5 + 3 * j] == '1'
        end
        ops[#ops + 1] = ARGV[a + 2] .. pick(KEYS[tonumber(ARGV[a + 1])], users, weights, away, catch_up) .. ARGV[a + 3]
      end
      a = a + 6 + 3 * size
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
