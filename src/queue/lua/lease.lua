-- lease.lua — lease the contact that has been ready longest, with every operation pending for it.
-- KEYS[1] ready zset (live contacts at their time, background ones at their time plus OFFSET)
-- KEYS[2] leases zset (contact -> deadline)
-- ARGV[1] now (ms)   ARGV[2] lease length (ms)   ARGV[3] lease id   ARGV[4] most operations to hand out
-- ARGV[5] the partition's key prefix (with its hash tag), to name the contact's pending list and state
-- Returns {0} when nothing is scheduled, {0, next_ready_at} when nothing is ready yet, {2} for a stale entry
-- (the caller asks again), or {1, contact, deadline, attempts, op1, op2, ...}.
-- The contact's keys are built here from ARGV[5]: they carry the same hash tag as KEYS, so the script stays
-- in one Cluster slot.
-- Live contacts first: a background one (scored its time plus OFFSET, see enqueue.lua) is leased only when no
-- live one is ready now.
local OFFSET = 10000000000000
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #due == 0 then due = redis.call('ZRANGEBYSCORE', KEYS[1], OFFSET, OFFSET + now, 'LIMIT', 0, 1) end
if #due == 0 then
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. OFFSET, 'WITHSCORES', 'LIMIT', 0, 1)
  local background = redis.call('ZRANGEBYSCORE', KEYS[1], OFFSET, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local next
  if #live > 0 then next = tonumber(live[2]) end
  if #background > 0 then
    local at = tonumber(background[2]) - OFFSET
    if not next or at < next then next = at end
  end
  if not next then return {0} end
  return {0, next}
end
local ck = due[1]
redis.call('ZREM', KEYS[1], ck)
local pending = ARGV[5] .. 'pending:' .. ck
local state = ARGV[5] .. 'state:' .. ck
local ops = redis.call('LRANGE', pending, 0, tonumber(ARGV[4]) - 1)
if #ops == 0 then
  redis.call('DEL', state)
  return {2}
end
local deadline = now + tonumber(ARGV[2])
redis.call('HSET', state, 'lease', ARGV[3], 'deadline', deadline)
local attempts = tonumber(redis.call('HGET', state, 'attempts') or '0')
redis.call('ZADD', KEYS[2], deadline, ck)
local reply = {1, ck, deadline, attempts}
for _, op in ipairs(ops) do reply[#reply + 1] = op end
return reply
