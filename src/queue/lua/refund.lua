-- refund.lua — give back a round robin's turn the member did not get (their rule was skipped at delivery),
-- as domain/pick.rs's `refund` does: one pick's worth of credit back (the team's weight), the day's and the
-- week's count down by one where they still count that day and week.
-- KEYS[1] the round robin's standings hash (see enqueue.lua)
-- ARGV[1] the member (JSON-escaped user id)   ARGV[2] the pick's day   ARGV[3] the pick's week
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local c, d, t, w, k = string.match(stored, '^(-?%d+):(%d+):(%d+):(%d+):(%d+)$')
if not c then c, d, t, w, k = stored, 0, 0, 0, 0 end
c, d, t, w, k = tonumber(c), tonumber(d), tonumber(t), tonumber(w), tonumber(k)
local team = tonumber(redis.call('HGET', KEYS[1], '\31w') or '0')
if d == tonumber(ARGV[2]) and t > 0 then t = t - 1 end
if w == tonumber(ARGV[3]) and k > 0 then k = k - 1 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d:%d:%d:%d', c + team, d, t, w, k))
return 1
