-- swap_stage.lua — store an opportunity's current stage and return the previous one.
-- KEYS[1] the opportunity's stage   KEYS[2] this event's memo
-- ARGV[1] how long the memo is kept (ms)   ARGV[2] the stage now
-- Returns "=<previous stage>", or "-" when none was stored. A repeated event id gets its first answer again.
local memo = redis.call('GET', KEYS[2])
if memo then return memo end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2])
local answer = '-'
if previous then answer = '=' .. previous end
redis.call('SET', KEYS[2], answer, 'PX', tonumber(ARGV[1]))
return answer
