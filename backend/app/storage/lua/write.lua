-- Write records into one or several tables, all or none: create them (mode
-- "insert": ids must be new), upsert them ("upsert"), or replace the tables'
-- records with them ("replace"). Every check comes before the first write.
--
-- KEYS: the T tables' bases, then the total counter and the catalog of tables
-- (the first base again, both, when the caller keeps them: a Cluster), the
-- change feed (the first base again: none), then the bases of the referenced
-- tables. ARGV: mode, max_records, max_tables, retain (the changes the feed
-- keeps), T, then for each
-- table: name, iv, n, F, F index fields, R, R times (field, index of the
-- referenced base in KEYS, unique id of the reference), then its n records:
-- id, json, secret ("" none), F index keys ("" none), R referenced ids ("" none).
-- The reference checks of a "replace" also need, for each reference into a
-- replaced table from a table not written: ARGV continues with P, then P
-- times (source base index in KEYS, field, target base index in KEYS).
local a = 1
local function arg() local v = ARGV[a]; a = a + 1; return v end
local mode = arg()
local max_records, max_tables = tonumber(arg()), tonumber(arg())
local retain = arg()
local nt = tonumber(arg())
local total_key, tables_key = KEYS[nt + 1], KEYS[nt + 2]
feed_open(KEYS[nt + 3], KEYS[1], retain)
-- in a Cluster the counters live elsewhere: their keys are the first table's
if total_key == KEYS[1] then total_key = '' end
if tables_key == KEYS[1] then tables_key = '' end
local replace, upsert = mode == 'replace', mode ~= 'insert'
local tables, by_base = {}, {}
for t = 1, nt do
  local tb = {base = KEYS[t], name = arg(), iv = arg(), n = tonumber(arg())}
  local nf = tonumber(arg())
  tb.fields = {}
  for f = 1, nf do tb.fields[f] = arg() end
  local nr = tonumber(arg())
  tb.refs = {}
  for r = 1, nr do tb.refs[r] = {field = arg(), target = KEYS[tonumber(arg())], uid = arg()} end
  tb.records = {}
  for i = 1, tb.n do
    local rec = {id = arg(), json = arg(), secret = arg(), keys = {}, refs = {}}
    for f = 1, nf do rec.keys[f] = arg() end
    for r = 1, nr do rec.refs[r] = arg() end
    tb.records[i] = rec
  end
  local now, specs = catalog(tb.base)
  if tb.iv ~= catalog_version(tb.base) or #now ~= nf then return {'stale', tb.name} end
  tb.specs = specs
  tb.exists = redis.call('EXISTS', kk(tb.base, 'm')) == 1
  tables[t] = tb
  by_base[tb.base] = tb
end
local np = tonumber(arg() or '0')
local kept_refs = {}
for p = 1, np do
  kept_refs[p] = {source = KEYS[tonumber(arg())], field = arg(), target = KEYS[tonumber(arg())]}
end
-- check
local added, new_tables = 0, 0
for _, tb in ipairs(tables) do
  tb.ids = {}
  if not tb.exists then new_tables = new_tables + 1 end
  if replace and tb.exists then added = added - redis.call('HLEN', kk(tb.base, 'r')) end
  for _, rec in ipairs(tb.records) do
    if tb.ids[rec.id] then return {'duplicate', tb.name, 'id', rec.id, rec.id, rec.id} end
    tb.ids[rec.id] = true
    local there = not replace and redis.call('HEXISTS', kk(tb.base, 'r'), rec.id) == 1
    if there and not upsert then return {'duplicate', tb.name, 'id', rec.id, rec.id, rec.id} end
    if not there then added = added + 1 end
  end
  for f, field in ipairs(tb.fields) do
    if tb.specs[field].unique then
      local seen = {}
      for _, rec in ipairs(tb.records) do
        local key = rec.keys[f]
        if key ~= '' and key ~= 'null' then
          if seen[key] then return {'duplicate', tb.name, field, key, seen[key], rec.id} end
          seen[key] = rec.id
          if not replace then
            local h = holder(kk(tb.base, 'x:' .. field), key)
            if h and h ~= rec.id and not tb.ids[h] then
              return {'duplicate', tb.name, field, key, h, rec.id}
            end
          end
        end
      end
    end
  end
end
-- does a record of a target table exist once this write is made?
local function named(target, id)
  local tb = by_base[target]
  if tb and tb.ids[id] then return true end
  if tb and replace then return false end
  return redis.call('HEXISTS', kk(target, 'r'), id) == 1
end
for _, tb in ipairs(tables) do
  for r, ref in ipairs(tb.refs) do
    local missing = {}
    for i, rec in ipairs(tb.records) do
      local target = rec.refs[r]
      if target == '' or not named(ref.target, target) then
        missing[#missing + 1] = tostring(i - 1)
      end
    end
    if #missing > 0 then return {'missing', tb.name, ref.uid, unpack(missing)} end
  end
end
if replace then
  for _, kr in ipairs(kept_refs) do
    -- the records of a table not written still name existing records?
    local entries = redis.call('ZRANGE', kk(kr.source, 'x:' .. kr.field), 0, -1)
    for _, m in ipairs(entries) do
      local key = string.sub(m, 1, string.find(m, '\0', 1, true) - 1)
      local ok, id = pcall(cjson.decode, key)
      if ok and type(id) == 'string' and not by_base[kr.target].ids[id] then
        return {'referenced', kr.source, kr.field}
      end
    end
  end
end
if total_key ~= '' and max_records > 0 then
  local total = tonumber(redis.call('GET', total_key) or '0')
  if total + added > max_records then return {'full_records', tostring(total)} end
end
if tables_key ~= '' and max_tables > 0 and new_tables > 0 then
  if redis.call('ZCARD', tables_key) + new_tables > max_tables then return {'full_tables'} end
end
-- write (the feed: a replaced table's drop first, then each record written)
local op = upsert and 'import' or 'create'
if replace then
  for _, tb in ipairs(tables) do
    if tb.exists then feed('drop', tb.name) end
  end
end
local created = {}
for _, tb in ipairs(tables) do
  local b = tb.base
  if not tb.exists then
    local now = redis.call('TIME')
    redis.call('HSET', kk(b, 'm'), 'seq', 0, 'bytes', 0, 'iv', tb.iv,
      'gen', now[1] .. string.format('%06d', tonumber(now[2])))
    created[#created + 1] = tb.name
    if tables_key ~= '' then
      -- the catalog of tables, in the order they were made
      redis.call('ZADD', tables_key, 'NX', redis.call('INCR', tables_key .. ':seq'), tb.name)
    end
  elseif replace then
    empty(b, tb.fields)
  end
  local fresh = 0
  for _, rec in ipairs(tb.records) do
    if replace or redis.call('HEXISTS', kk(b, 'r'), rec.id) == 0 then fresh = fresh + 1 end
  end
  local next_seq = redis.call('HINCRBY', kk(b, 'm'), 'seq', fresh) - fresh
  local bytes = 0
  for _, rec in ipairs(tb.records) do
    local old = redis.call('HGET', kk(b, 'r'), rec.id)
    local seq
    if old then
      unindex(b, tb.fields, rec.id)
      bytes = bytes - #old
      seq = tonumber(redis.call('ZSCORE', kk(b, 'o'), rec.id))
    else
      next_seq = next_seq + 1
      seq = next_seq
      redis.call('ZADD', kk(b, 'o'), seq, rec.id)
    end
    redis.call('HSET', kk(b, 'r'), rec.id, rec.json)
    feed(op, tb.name, rec.id, rec.json)
    bytes = bytes + #rec.json
    if rec.secret ~= '' then redis.call('HSET', kk(b, 's'), rec.id, rec.secret) end
    for f, field in ipairs(tb.fields) do index(b, field, rec.keys[f], seqtext(seq), rec.id) end
  end
  redis.call('HINCRBY', kk(b, 'm'), 'bytes', bytes)
end
if total_key ~= '' then redis.call('INCRBY', total_key, added) end
feed_trim()
return {'ok', tostring(added), unpack(created)}
