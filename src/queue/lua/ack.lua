-- ack.lua — end a lease: remove its operations (or move them to a dead letter); make the contact ready
-- again if more arrived meanwhile.
-- KEYS[1] ready zset   KEYS[2] leases zset   KEYS[3] the contact's pending list   KEYS[4] its state hash
-- KEYS[5] followers followd added (zset, scored by when)   KEYS[6] pending operation counter
-- KEYS[7] dead letters hash, KEYS[8] the dead letter's operation list (used only when dead-lettering)
-- KEYS[9] the contact's audit trail (list, newest first)
-- KEYS[10] followers followd added, as older versions kept them (set; moved into KEYS[5], then deleted)
-- ARGV[1] now (ms)   ARGV[2] contact   ARGV[3] lease id   ARGV[4] operations leased (the list's first N)
-- ARGV[5] "1" when every follower was removed   ARGV[6] JSON users removed   ARGV[7] JSON users added
-- ARGV[8] an audit entry's JSON up to its "operation" value   ARGV[9] most audit entries kept
-- ARGV[10] JSON followers the CRM listed when the delivery read the contact, or "" when it did not
-- ARGV[11] dead letter id, ARGV[12] its JSON description ("" unless dead-lettering)
-- ARGV[13] JSON list, one per operation leased, of the audit prefix to use instead of ARGV[8] ("": ARGV[8]),
-- for operations a rule's skip_if_following gave up; "" when there are none
-- Returns 1, or -1 when the lease is no longer held (it expired and was reaped).
if redis.call('HGET', KEYS[4], 'lease') ~= ARGV[3] then return -1 end
local n = tonumber(ARGV[4])
local ops = redis.call('LRANGE', KEYS[3], 0, n - 1)
if ARGV[11] and ARGV[11] ~= '' then
  if #ops > 0 then redis.call('RPUSH', KEYS[8], unpack(ops)) end
  redis.call('HSET', KEYS[7], ARGV[11], ARGV[12])
end
local prefixes = {}
if ARGV[13] and ARGV[13] ~= '' then prefixes = cjson.decode(ARGV[13]) end
for i, op in ipairs(ops) do
  local prefix = ARGV[8]
  if prefixes[i] and prefixes[i] ~= '' then prefix = prefixes[i] end
  redis.call('LPUSH', KEYS[9], prefix .. op .. '}')
end
redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[9]) - 1)
-- Operations enqueued during the lease were appended after the leased ones, so the first N are exactly these.
redis.call('LTRIM', KEYS[3], n, -1)
redis.call('DECRBY', KEYS[6], n)
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('HDEL', KEYS[4], 'lease', 'deadline')
  redis.call('HSET', KEYS[4], 'attempts', 0)
  -- In its lane: background contacts wait after the live ones (see enqueue.lua).
  local lane = 0
  if redis.call('HGET', KEYS[4], 'bg') == '1' then lane = 10000000000000 end
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + lane, ARGV[2])
else
  redis.call('DEL', KEYS[4])
end
-- Followers followd added: older ones first (score 0 for those an older version recorded).
for _, user in ipairs(redis.call('SMEMBERS', KEYS[10])) do redis.call('ZADD', KEYS[5], 'NX', 0, user) end
redis.call('DEL', KEYS[10])
if ARGV[5] == '1' then redis.call('DEL', KEYS[5]) end
if ARGV[10] ~= '' then
  local seen = {}
  for _, user in ipairs(cjson.decode(ARGV[10])) do seen[user] = true end
  for _, user in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    if not seen[user] then redis.call('ZREM', KEYS[5], user) end
  end
end
for _, user in ipairs(cjson.decode(ARGV[6])) do redis.call('ZREM', KEYS[5], user) end
for _, user in ipairs(cjson.decode(ARGV[7])) do redis.call('ZADD', KEYS[5], 'NX', tonumber(ARGV[1]), user) end
return 1
