-- The records whose field holds one of the keys, in insertion order: offset to
-- offset + limit of them (limit -1: all), how many there are, and the change
-- feed's cursor they were read at ("" without a feed). field "id": the keys
-- are ids. Answers {"none"} without a ready index, {"unknown"} without the
-- table, {"ok", total} for the count alone, else {"ok", total, cursor,
-- json...}. KEYS[1]: the base; KEYS[2]: the change feed (the base again, or
-- none given: none). ARGV: field, offset, limit, size ("1": only the count),
-- then the keys.
local base = KEYS[1]
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {'unknown'} end
feed_open(KEYS[2] or base, base, 0)
local field, offset, limit, size_only = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local found = {}  -- {seq text, id}
if field == 'id' then
  for n = 5, #ARGV do
    local score = redis.call('ZSCORE', kk(base, 'o'), ARGV[n])
    if score then found[#found + 1] = {seqtext(tonumber(score)), ARGV[n]} end
  end
else
  local spec = redis.call('HGET', kk(base, 'i'), field)
  if not spec or not cjson.decode(spec).ready then return {'none'} end
  local x = kk(base, 'x:' .. field)
  if #ARGV == 5 then
    -- one key: the index pages it
    local key = ARGV[5]
    local total = redis.call('ZLEXCOUNT', x, '[' .. key .. '\0', '(' .. key .. '\1')
    if size_only then return {'ok', total} end
    local count = limit < 0 and -1 or limit
    local members = {}
    if count ~= 0 and offset < total then
      members = redis.call('ZRANGEBYLEX', x, '[' .. key .. '\0', '(' .. key .. '\1', 'LIMIT', offset, count)
    end
    local ids = {}
    for _, m in ipairs(members) do ids[#ids + 1] = string.sub(m, #key + 15) end
    local out = {'ok', total, feed_cursor()}
    if #ids > 0 then
      for _, json in ipairs(redis.call('HMGET', kk(base, 'r'), unpack(ids))) do out[#out + 1] = json end
    end
    return out
  end
  local seen = {}
  for n = 5, #ARGV do
    local key = ARGV[n]
    if not seen[key] then
      seen[key] = true
      for _, m in ipairs(redis.call('ZRANGEBYLEX', x, '[' .. key .. '\0', '(' .. key .. '\1')) do
        found[#found + 1] = {string.sub(m, #key + 2, #key + 13), string.sub(m, #key + 15)}
      end
    end
  end
end
if size_only then return {'ok', #found} end
table.sort(found, function(p, q) return p[1] < q[1] end)
local out = {'ok', #found, feed_cursor()}
local last = limit < 0 and #found or math.min(#found, offset + limit)
local ids = {}
for n = offset + 1, last do ids[#ids + 1] = found[n][2] end
if #ids > 0 then
  for _, json in ipairs(redis.call('HMGET', kk(base, 'r'), unpack(ids))) do out[#out + 1] = json end
end
return out
