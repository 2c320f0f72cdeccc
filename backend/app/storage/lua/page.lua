-- Records offset to offset + limit in insertion order, with the table's count.
-- KEYS[1]: the base. ARGV: offset, limit. Answers {0} without the table.
local base = KEYS[1]
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {0} end
local total = redis.call('ZCARD', kk(base, 'o'))
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit == 0 or offset >= total then return {1, total} end
local ids = redis.call('ZRANGE', kk(base, 'o'), offset, offset + limit - 1)
local out = {1, total}
local found = redis.call('HMGET', kk(base, 'r'), unpack(ids))
for _, json in ipairs(found) do out[#out + 1] = json end
return out
