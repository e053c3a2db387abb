-- diff_tags.lua — replace a contact's stored tag set and say what was added and removed, atomically.
-- KEYS[1] the contact's tag set   KEYS[2] this event's memo (the answer given to this event id)
-- ARGV[1] how long the memo is kept (ms)   ARGV[2..] the contact's tags now, normalized
-- Returns JSON {"added":[...],"removed":[...]}. A repeated event id gets its first answer again, so a sender's
-- retry after a failed enqueue re-derives the same change instead of an empty one.
local memo = redis.call('GET', KEYS[2])
if memo then return memo end
local now = {}
for i = 2, #ARGV do now[ARGV[i]] = true end
local before, removed, added = {}, {}, {}
for _, tag in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  before[tag] = true
  if not now[tag] then removed[#removed + 1] = tag end
end
for i = 2, #ARGV do
  if not before[ARGV[i]] then added[#added + 1] = ARGV[i] end
end
redis.call('DEL', KEYS[1])
if #ARGV > 1 then redis.call('SADD', KEYS[1], unpack(ARGV, 2)) end
-- cjson writes an empty table as {}; the lists are written as arrays explicitly.
local function list(t) if #t == 0 then return '[]' end return cjson.encode(t) end
local answer = '{"added":' .. list(added) .. ',"removed":' .. list(removed) .. '}'
redis.call('SET', KEYS[2], answer, 'PX', tonumber(ARGV[1]))
return answer
