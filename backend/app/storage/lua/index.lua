-- The index catalog of a table. ARGV[1]: the step:
--   "begin" field unique max kind: add the index (not ready yet; every write
--     from now on keeps it), answer {"ok", iv}; kind is "hash" or "sorted" (a
--     sorted index is kept as a hash index: sorts and ranges scan)
--   "fill" field n (id version key)*n: index records still at the version read
--   "ready" field name retain: the index answers lookups from now on
--   "drop" field name retain: remove it
--   "holders" field key...: the id holding each key ("" none)
-- KEYS[1]: the base; KEYS[2]: the change feed (the base again: none), which
-- has an index once it is ready, until it is dropped (name: the table's;
-- retain: the changes the feed keeps).
local base = KEYS[1]
local step, field = ARGV[1], ARGV[2]
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {'unknown'} end
local spec = redis.call('HGET', kk(base, 'i'), field)
if step == 'begin' then
  if spec then return {'exists'} end
  if redis.call('HLEN', kk(base, 'i')) >= tonumber(ARGV[4]) then return {'too_many'} end
  local iv = redis.call('HINCRBY', kk(base, 'm'), 'iv', 1)
  redis.call('HSET', kk(base, 'i'), field, cjson.encode({unique = ARGV[3] == '1', ready = false, at = iv, kind = ARGV[5]}))
  return {'ok', tostring(iv)}
end
if not spec then return {'unknown_index'} end
if step == 'holders' then
  local out = {'ok'}
  for n = 3, #ARGV do out[#out + 1] = holder(kk(base, 'x:' .. field), ARGV[n]) or '' end
  return out
end
if step == 'fill' then
  local unique = cjson.decode(spec).unique
  local x = kk(base, 'x:' .. field)
  local n = tonumber(ARGV[3])
  for i = 0, n - 1 do
    local id, v, key = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i]
    local json = redis.call('HGET', kk(base, 'r'), id)
    if json and version(json) == v and not redis.call('HGET', kk(base, 'y:' .. field), id) then
      if unique and key ~= '' and key ~= 'null' then
        local h = holder(x, key)
        if h and h ~= id then return {'duplicate', key, h, id} end
      end
      index(base, field, key, seqtext(tonumber(redis.call('ZSCORE', kk(base, 'o'), id))), id)
    end
  end
  return {'ok'}
end
feed_open(KEYS[2], base, ARGV[4])
local s = cjson.decode(spec)
local described = '{"field":' .. cjson.encode(field)
if step == 'ready' then
  local kind = s.kind or 'hash'
  redis.call('HSET', kk(base, 'i'), field, cjson.encode({unique = s.unique, ready = true, at = s.at, kind = kind}))
  if not s.ready then
    feed('create_index', ARGV[3], nil, described .. ',"unique":' .. (s.unique and 'true' or 'false') .. ',"kind":' .. cjson.encode(kind) .. '}')
    feed_trim()
  end
  return {'ok', tostring(redis.call('HINCRBY', kk(base, 'm'), 'iv', 1))}
end
-- drop
redis.call('HDEL', kk(base, 'i'), field)
redis.call('UNLINK', kk(base, 'x:' .. field), kk(base, 'y:' .. field))
if s.ready then
  feed('drop_index', ARGV[3], nil, described .. '}')
  feed_trim()
end
return {'ok', tostring(redis.call('HINCRBY', kk(base, 'm'), 'iv', 1))}
