-- enqueue.lua — store a batch of events' follower operations, once per event id, in one partition.
-- KEYS[1] ready zset (contact -> ready_at)   KEYS[2] pending operation counter
-- KEYS[3] timers zset (contact \30 user -> when a timed follower's removal is due)
-- KEYS[4..] per event, four keys: seen marker, pending list, state hash, the contact's timers hash (user ->
-- the removal to queue); then round robins' standings hashes and dead letter keys
-- ARGV[1] now (ms)   ARGV[2] de-duplication window (ms)   ARGV[3] number of events
-- then per event: contact member, number of operations, "1" for background work (a reconcile) or "0", and
-- per operation either
--   the operation's JSON, encoded by the caller (it starts with "{"), or
--   "rr", standings KEYS index, JSON before the user, JSON after the user, team size, "1" for catch_up or
--   "0", max per day and max per week (0: none), today and this week (days and weeks since the epoch), JSON
--   after the user when everyone was away, the overflow user (JSON-escaped; "" for none), JSON after it, the
--   KEYS indexes of the dead letters hash and of the letter's operation list, the letter's id and JSON
--   description ("" x4 unless a refused turn is dead-lettered), JSON after the user a replayed letter adds;
--   then per member its user id (JSON-escaped), weight, and "1" when away now (skipped, unless everyone is)
--   or "0"
-- and after each operation what it does to the contact's timers: "c" and the user (JSON-escaped) to cancel
-- theirs (any add or removal), "C" and "" to cancel them all (remove_all), or "s", the user ("" for a round
-- robin: whom it picks), the due time and the removal's JSON before and after the user, to set (or move) it
-- Returns one integer per event: -1 when its id was seen within the window, else the operations stored.
-- Every key shares the partition's hash tag (see keys.rs), so the script runs on Redis Cluster.
-- Kept lean on purpose: no cjson, one RPUSH per event, ZADD NX; this is the webhook path's only write.
-- Lanes: a background contact waits at its time plus OFFSET (after every live one; state field bg = 1, set
-- while every pending operation is background); live work brings it forward, keeping its time.
local OFFSET = 10000000000000
-- A round robin's standings hash: field TEAM_WEIGHT is the team's total weight when last settled, and one
-- field per member (its user id, JSON-escaped) holds "credit:day:today:week:this_week" (older versions wrote
-- the credit alone). The arithmetic is domain/pick.rs's, step for step (settle, skip who is capped or away,
-- gain, pick the most credit, pay back, count), so both stores pick alike.
local TEAM_WEIGHT = '\31w'

local function round(x)
  if x >= 0 then return math.floor(x + 0.5) end
  return -math.floor(-x + 0.5)
end

local function standing(text)
  local c, d, t, w, k = string.match(text, '^(-?%d+):(%d+):(%d+):(%d+):(%d+)$')
  if c then return tonumber(c), { day = tonumber(d), today = tonumber(t), week = tonumber(w), this_week = tonumber(k) } end
  return tonumber(text), { day = 0, today = 0, week = 0, this_week = 0 }
end

-- Returns the user picked and whether everyone was away, or nil when every member is at their cap. Stores the
-- standings only when `commit` (a turn refused at the cap asks, without storing, whom it would have been).
local function pick(key, users, weights, away, catch_up, caps, when, commit)
  local n = #users
  local total = 0
  local member = {}
  for j = 1, n do
    total = total + weights[j]
    member[users[j]] = true
  end
  local stored = redis.call('HGETALL', key)
  local credit, count, settled = {}, {}, 0
  for j = 1, #stored, 2 do
    if stored[j] == TEAM_WEIGHT then
      settled = tonumber(stored[j + 1])
    elseif member[stored[j]] then
      credit[stored[j]], count[stored[j]] = standing(stored[j + 1])
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
  local function picks(user)
    local c = count[user]
    if not c then return 0, 0 end
    local today, week = 0, 0
    if c.day == when.day then today = c.today end
    if c.week == when.week then week = c.this_week end
    return today, week
  end
  local capped, open, present = {}, 0, 0
  for j = 1, n do
    local today, week = picks(users[j])
    capped[j] = (caps.day > 0 and today >= caps.day) or (caps.week > 0 and week >= caps.week)
    if not capped[j] then
      open = open + 1
      if not away[j] then present = present + 1 end
    end
  end
  if open == 0 then return nil end
  -- Who takes part: the members neither capped nor away; every uncapped one when all are away. They gain, and
  -- one of them is picked; with catch_up, who is away (and not capped) gains too.
  local everyone_away = present == 0
  local chosen, handed_out = nil, 0
  for j = 1, n do
    local eligible = not capped[j] and (everyone_away or not away[j])
    if eligible or (catch_up and away[j] and not capped[j]) then
      credit[users[j]] = (credit[users[j]] or 0) + weights[j]
      handed_out = handed_out + weights[j]
    end
    if eligible and (chosen == nil or credit[users[j]] > credit[users[chosen]]) then chosen = j end
  end
  local user = users[chosen]
  credit[user] = credit[user] - handed_out
  local today, week = picks(user)
  count[user] = { day = when.day, today = today + 1, week = when.week, this_week = week + 1 }
  if commit then
    local fields = { TEAM_WEIGHT, total }
    for j = 1, n do
      local c = count[users[j]] or { day = 0, today = 0, week = 0, this_week = 0 }
      fields[#fields + 1] = users[j]
      fields[#fields + 1] = string.format('%d:%d:%d:%d:%d', credit[users[j]] or 0, c.day, c.today, c.week, c.this_week)
    end
    redis.call('HSET', key, unpack(fields))
  end
  return user, everyone_away
end
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local events = tonumber(ARGV[3])
local results = {}
local a = 4
for i = 1, events do
  local seen, pending, state, ctimers = KEYS[4 * i], KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3]
  local member = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local background = ARGV[a + 2] == '1'
  a = a + 3
  -- The value is when the id may be accepted again, by the caller's clock (as in the embedded queue); the
  -- key's own TTL only cleans up.
  local duplicate = tonumber(redis.call('GET', seen) or '0') > now
  local ops, timers = {}, {}
  for _ = 1, count do
    -- Who the operation stored is about (a round robin's pick), or nil when nothing was stored.
    local about = nil
    if ARGV[a] == 'rr' then
      local size = tonumber(ARGV[a + 4])
      if not duplicate then
        -- Round robin: the standings change only when the pick is stored, in this same script.
        local users, weights, away = {}, {}, {}
        for j = 1, size do
          local m = a + 15 + 3 * j
          users[j] = ARGV[m]
          weights[j] = tonumber(ARGV[m + 1])
          away[j] = ARGV[m + 2] == '1'
        end
        local catch_up = ARGV[a + 5] == '1'
        local caps = { day = tonumber(ARGV[a + 6]), week = tonumber(ARGV[a + 7]) }
        local when = { day = tonumber(ARGV[a + 8]), week = tonumber(ARGV[a + 9]) }
        local key = KEYS[tonumber(ARGV[a + 1])]
        local user, everyone_away = pick(key, users, weights, away, catch_up, caps, when, true)
        if user then
          local after = ARGV[a + 3]
          if everyone_away then after = ARGV[a + 10] end
          ops[#ops + 1] = ARGV[a + 2] .. user .. after
          about = user
        elseif ARGV[a + 11] ~= '' then
          ops[#ops + 1] = ARGV[a + 2] .. ARGV[a + 11] .. ARGV[a + 12]
          about = ARGV[a + 11]
        elseif ARGV[a + 13] ~= '' then
          -- Every member at their cap, no overflow: set aside; a replay adds whom the pick would choose uncapped.
          local anyway = pick(key, users, weights, away, catch_up, { day = 0, week = 0 }, when, false)
          redis.call('RPUSH', KEYS[tonumber(ARGV[a + 14])], ARGV[a + 2] .. anyway .. ARGV[a + 17])
          redis.call('HSET', KEYS[tonumber(ARGV[a + 13])], ARGV[a + 15], ARGV[a + 16])
        end
      end
      a = a + 18 + 3 * size
    else
      ops[#ops + 1] = ARGV[a]
      about = ''
      a = a + 1
    end
    local timer = { kind = ARGV[a], user = ARGV[a + 1] }
    a = a + 2
    if timer.kind == 's' then
      timer.due, timer.before, timer.after = ARGV[a], ARGV[a + 1], ARGV[a + 2]
      a = a + 3
    end
    if about and not duplicate then
      if timer.user == '' then timer.user = about end
      timers[#timers + 1] = timer
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
    -- Timed followers: a timed add sets (or moves) the user's removal; any other add or removal cancels it.
    -- Most contacts have no timer: one EXISTS spares them the cancelling.
    local has_timers = nil
    for _, t in ipairs(timers) do
      if t.kind == 's' then
        redis.call('HSET', ctimers, t.user, t.before .. t.user .. t.after)
        redis.call('ZADD', KEYS[3], tonumber(t.due), member .. '\30' .. t.user)
        has_timers = true
      else
        if has_timers == nil then has_timers = redis.call('EXISTS', ctimers) == 1 end
        if has_timers and t.kind == 'C' then
          for _, user in ipairs(redis.call('HKEYS', ctimers)) do redis.call('ZREM', KEYS[3], member .. '\30' .. user) end
          redis.call('DEL', ctimers)
          has_timers = false
        elseif has_timers then
          redis.call('HDEL', ctimers, t.user)
          redis.call('ZREM', KEYS[3], member .. '\30' .. t.user)
        end
      end
    end
    results[i] = #ops
  end
end
return results
