-- diff_tags.lua — apply a whole-state payload to a contact, atomically: refuse it when older than the last one
-- applied; otherwise remember its time and, when it lists tags, replace the stored tag set and say what was
-- added and removed.
-- KEYS[1] the contact's tag set   KEYS[2] this event's memo (the answer given to this event id)
-- KEYS[3] the time (ms) of the last whole-state payload applied for the contact
-- ARGV[1] how long the memo is kept (ms)   ARGV[2] the payload's time (ms), or "" when it has none
-- ARGV[3] "1" when the payload lists tags   ARGV[4..] the contact's tags now, normalized
-- Returns JSON {"added":[...],"removed":[...],"stale":bool}. A repeated event id gets its first answer again,
-- so a sender's retry after a failed enqueue re-derives the same change instead of an empty one.
local memo = redis.call('GET', KEYS[2])
if memo then return memo end
local answer
local last = tonumber(redis.call('GET', KEYS[3]) or '')
local at = tonumber(ARGV[2])
if at and last and at < last then
  answer = '{"added":[],"removed":[],"stale":true}'
else
  if at then redis.call('SET', KEYS[3], ARGV[2]) end
  local before, removed, added = {}, {}, {}
  if ARGV[3] == '1' then
    local now = {}
    for i = 4, #ARGV do now[ARGV[i]] = true end
    for _, tag in ipairs(redis.call('SMEMBERS', KEYS[1])) do
      before[tag] = true
      if not now[tag] then removed[#removed + 1] = tag end
    end
    for i = 4, #ARGV do
      if not before[ARGV[i]] then added[#added + 1] = ARGV[i] end
    end
    redis.call('DEL', KEYS[1])
    if #ARGV > 3 then redis.call('SADD', KEYS[1], unpack(ARGV, 4)) end
  end
  -- cjson writes an empty table as {}; the lists are written as arrays explicitly.
  local function list(t) if #t == 0 then return '[]' end return cjson.encode(t) end
  answer = '{"added":' .. list(added) .. ',"removed":' .. list(removed) .. ',"stale":false}'
end
redis.call('SET', KEYS[2], answer, 'PX', tonumber(ARGV[1]))
return answer
