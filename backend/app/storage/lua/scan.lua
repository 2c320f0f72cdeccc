-- The next batch of a scan in insertion order, in one step: the records whose
-- sequence is above ARGV[1], at most ARGV[2] of them (what a scan reads when
-- records left the table while it read a batch in two). Answers {-1} without the table, else
-- {last sequence, count of the table, json...}.
local base = KEYS[1]
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {-1} end
local found = redis.call('ZRANGEBYSCORE', kk(base, 'o'), '(' .. ARGV[1], '+inf',
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {ARGV[1], redis.call('ZCARD', kk(base, 'o'))}
if #found == 0 then return out end
local ids = {}
for n = 1, #found, 2 do ids[#ids + 1] = found[n] end
out[1] = found[#found]
local jsons = redis.call('HMGET', kk(base, 'r'), unpack(ids))
for n = 1, #ids do
  if jsons[n] then out[#out + 1] = jsons[n] end
end
return out
