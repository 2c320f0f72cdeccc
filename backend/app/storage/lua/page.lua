-- Records offset to offset + limit in insertion order, with the table's count
-- and the change feed's cursor they were read at ("" without a feed).
-- KEYS[1]: the base; KEYS[2]: the change feed (the base again: none).
-- ARGV: offset, limit. Answers {0} without the table, else
-- {1, count, cursor, json...}.
local base = KEYS[1]
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {0} end
feed_open(KEYS[2], base, 0)
local total = redis.call('ZCARD', kk(base, 'o'))
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {1, total, feed_cursor()}
if limit == 0 or offset >= total then return out end
local ids = redis.call('ZRANGE', kk(base, 'o'), offset, offset + limit - 1)
local found = redis.call('HMGET', kk(base, 'r'), unpack(ids))
for _, json in ipairs(found) do out[#out + 1] = json end
return out
