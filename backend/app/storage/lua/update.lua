-- Merge fields into a record, in one step: the version check (If-Match), the
-- merge (RFC 7396 or top-level), the field limit, unique indexes, references,
-- the write-only values. ARGV: iv, id, expected versions ("" any, "=v1,v2" those), how ("1" a
-- merge patch, "0" top-level fields, "2" the whole new record given), fields
-- (a JSON object: the fields, or the new record), updated_at (JSON text),
-- secret ("-" leave, "" remove, else JSON), max_fields, F, F fields, F index
-- keys ("=" unchanged, "" none), R, R reference fields, R referenced ids ("="
-- unchanged), the table's name, what the change feed calls the change
-- ("update" or "patch"), retain (the changes the feed keeps).
-- KEYS[1]: the table's base; KEYS[2]: the change feed (the base again: none);
-- KEYS[3..]: the base of each referenced table.
local base = KEYS[1]
local function k(suffix) return kk(base, suffix) end
local a = 1
local function arg() local v = ARGV[a]; a = a + 1; return v end
local iv, id, expected, how = arg(), arg(), arg(), arg()
local patch = how == '1'
local given, updated_at, secret = arg(), arg(), arg()
local max_fields = tonumber(arg())
merge_most = max_fields
local nf = tonumber(arg())
local fields, keys = {}, {}
for i = 1, nf do fields[i] = arg() end
for i = 1, nf do keys[i] = arg() end
local nr = tonumber(arg())
local ref_fields, ref_ids = {}, {}
for i = 1, nr do ref_fields[i] = arg() end
for i = 1, nr do ref_ids[i] = arg() end
local name, op = arg(), arg()
feed_open(KEYS[2], base, arg())
local fields_now, specs = catalog(base)
if iv ~= catalog_version(base) or #fields_now ~= nf then return {'stale'} end
local old = redis.call('HGET', k('r'), id)
if not old then
  if redis.call('EXISTS', kk(base, 'm')) == 0 then return {'no_table'} end
  return {'unknown'}
end
if not allowed(old, expected) then return {'changed'} end
local json
if how == '2' then
  json = given
else
-- the merge, on the JSON texts
local order, values, rid, created_at = {}, {}, nil, nil
for _, m in ipairs(members(old)) do
  if m[1] == '"id"' then rid = m[2]
  elseif m[1] == '"created_at"' then created_at = m[2]
  elseif m[1] ~= '"updated_at"' then
    order[#order + 1] = m[1]
    values[m[1]] = m[2]
  end
end
for _, m in ipairs(members(given)) do
  local current = values[m[1]]
  if current == nil then order[#order + 1] = m[1] end
  if patch then
    if m[2] == 'null' then
      values[m[1]] = false
    else
      if current == false then current = nil end
      values[m[1]] = merge_patch(current, m[2])
    end
  else
    values[m[1]] = m[2]
  end
end
local count = 0
for _, key in ipairs(order) do if values[key] then count = count + 1 end end
if count > max_fields or merge_grown then return {'too_many_fields'} end
local body = build(order, values)
json = '{"id":' .. rid .. (body == '{}' and '' or (',' .. string.sub(body, 2, -2)))
  .. ',"created_at":' .. created_at .. ',"updated_at":' .. updated_at .. '}'
end
-- unique values and references of what changes
for f, field in ipairs(fields) do
  local key = keys[f]
  if key ~= '=' and key ~= '' and key ~= 'null' and specs[field].unique then
    local h = holder(k('x:' .. field), key)
    if h and h ~= id then return {'duplicate', field, key, h, id} end
  end
end
for r = 1, nr do
  local target = ref_ids[r]
  if target ~= '=' and (target == '' or redis.call('HEXISTS', KEYS[2 + r] .. ':r', target) == 0) then
    return {'missing', tostring(r), '0'}
  end
end
-- write
local seq = seqtext(tonumber(redis.call('ZSCORE', k('o'), id)))
for f, field in ipairs(fields) do
  local key = keys[f]
  if key ~= '=' then
    unindex_one(base, field, id)
    index(base, field, key, seq, id)
  end
end
redis.call('HSET', k('r'), id, json)
redis.call('HINCRBY', k('m'), 'bytes', #json - #old)
if secret == '' then
  redis.call('HDEL', k('s'), id)
elseif secret ~= '-' then
  redis.call('HSET', k('s'), id, secret)
end
feed(op, name, id, json)
feed_trim()
return {'ok', json}
