-- Shared by every script of the Redis backend (prepended to each).
--
-- Keys of one table share a hash tag, so that a script touching them runs on
-- one node: a table's base name is "<prefix>:{<tag>}:<table>" (a KEYS entry),
-- and the scripts derive the others from it:
--   <base>:m  HASH  seq (insertion counter), bytes (size of the records), iv
--                   (version of the index catalog), gen (changes whenever a
--                   record leaves the table, and differs between the lives
--                   of a table dropped and made again); its existence is the table's
--   <base>:r  HASH  id -> record (compact JSON)
--   <base>:o  ZSET  id scored by its insertion sequence (insertion order)
--   <base>:s  HASH  id -> write-only values (JSON), e.g. a password hash
--   <base>:i  HASH  field -> index spec (JSON: unique, ready)
--   <base>:x:<field>  ZSET  "<key>\0<seq>\0<id>" at score 0: an index, whose
--                   lexicographic order is by value, then insertion order
--   <base>:y:<field>  HASH  id -> its member in x (to remove it on a change)
-- <key> is the canonical JSON text of a value (computed by the service, so
-- that 1 and 1.0 are one key): it never holds a NUL byte.

local function kk(b, suffix) return b .. ':' .. suffix end

local function seqtext(n) return string.format('%012x', n) end

local function member(key, seq, id) return key .. '\0' .. seq .. '\0' .. id end

-- the first member of an index (a ZSET) holding <key>, if any: its id
local function holder(xkey, key)
  local found = redis.call('ZRANGEBYLEX', xkey, '[' .. key .. '\0', '(' .. key .. '\1', 'LIMIT', 0, 1)
  if #found == 0 then return nil end
  local m = found[1]
  local second = string.find(m, '\0', #key + 2, true)
  return string.sub(m, second + 1)
end

local function version(json) return string.sub(redis.sha1hex(json), 1, 16) end

local function allowed(json, expected)
  -- expected: "" for any version, else "=" and the versions separated by
  -- commas ("=" alone: none)
  if expected == '' then return true end
  local v = version(json)
  for e in string.gmatch(string.sub(expected, 2), '[^,]+') do
    if e == v then return true end
  end
  return false
end

-- the index catalog: fields in a stable order, with their specs
local function catalog(b)
  local raw = redis.call('HGETALL', kk(b, 'i'))
  local fields = {}
  for n = 1, #raw, 2 do fields[#fields + 1] = raw[n] end
  table.sort(fields)
  local specs = {}
  for n = 1, #raw, 2 do specs[raw[n]] = cjson.decode(raw[n + 1]) end
  return fields, specs
end

local function catalog_version(b)
  return redis.call('HGET', kk(b, 'm'), 'iv') or '0'
end

-- remove a record's entry from one index, and from every index
local function unindex_one(b, f, id)
  local old = redis.call('HGET', kk(b, 'y:' .. f), id)
  if old then
    redis.call('ZREM', kk(b, 'x:' .. f), old)
    redis.call('HDEL', kk(b, 'y:' .. f), id)
  end
end

local function unindex(b, fields, id)
  for _, f in ipairs(fields) do unindex_one(b, f, id) end
end

local function index(b, field, key, seq, id)
  if key == '' then return end  -- the record has no value there
  local m = member(key, seq, id)
  redis.call('ZADD', kk(b, 'x:' .. field), 0, m)
  redis.call('HSET', kk(b, 'y:' .. field), id, m)
end

-- every record, entry and counter of a table gone; its catalog stays
local function empty(b, fields)
  redis.call('UNLINK', kk(b, 'r'), kk(b, 'o'), kk(b, 's'))
  for _, f in ipairs(fields) do redis.call('UNLINK', kk(b, 'x:' .. f), kk(b, 'y:' .. f)) end
  redis.call('HSET', kk(b, 'm'), 'bytes', 0)
  redis.call('HINCRBY', kk(b, 'm'), 'gen', 1)
end

-- ---- JSON text, as orjson writes it (compact) --------------------------------

local function skip_string(s, i)
  local j = i + 1
  while true do
    local q = string.find(s, '["\\]', j)
    if string.byte(s, q) == 92 then j = q + 2 else return q + 1 end
  end
end

local function skip_value(s, i)
  local c = string.byte(s, i)
  if c == 34 then return skip_string(s, i) end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      local q = string.find(s, '[%[%]{}"]', j)
      local ch = string.byte(s, q)
      if ch == 34 then
        j = skip_string(s, q)
      elseif ch == 123 or ch == 91 then
        depth = depth + 1
        j = q + 1
      else
        depth = depth - 1
        j = q + 1
        if depth == 0 then return j end
      end
    end
  end
  local q = string.find(s, '[,}%]]', i)
  return q or (#s + 1)
end

-- the members of an object's text, in order: {raw key, raw value}
local function members(s)
  local out = {}
  if string.byte(s, 2) == 125 then return out end
  local i = 2
  while true do
    local kend = skip_string(s, i)
    local vend = skip_value(s, kend + 1)
    out[#out + 1] = {string.sub(s, i, kend - 1), string.sub(s, kend + 1, vend - 1)}
    if string.byte(s, vend) == 125 then return out end
    i = vend + 1
  end
end

local function is_object(v) return v ~= nil and string.byte(v, 1) == 123 end

local function build(order, values)
  local parts = {}
  for _, key in ipairs(order) do
    local v = values[key]
    if v then parts[#parts + 1] = key .. ':' .. v end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- RFC 7396 on JSON texts: objects merge, null removes, anything else replaces;
-- a member already there keeps its place, a new one comes last
-- set when an object a merge patch merged into holds more than merge_most
-- fields afterwards (a patch adds to objects it does not send whole)
local merge_most, merge_grown = math.huge, false
local merge_patch
merge_patch = function(target, patch)
  if not is_object(patch) then return patch end
  local order, values = {}, {}
  if is_object(target) then
    for _, m in ipairs(members(target)) do
      order[#order + 1] = m[1]
      values[m[1]] = m[2]
    end
  end
  for _, m in ipairs(members(patch)) do
    if m[2] == 'null' then
      values[m[1]] = false
    else
      local old = values[m[1]]
      if old == nil then order[#order + 1] = m[1] end
      if old == false then old = nil end
      values[m[1]] = merge_patch(old, m[2])
    end
  end
  local count = 0
  for _, key in ipairs(order) do if values[key] then count = count + 1 end end
  if count > merge_most then merge_grown = true end
  return build(order, values)
end

-- ---- the change feed ----------------------------------------------------------
--
-- <prefix>:changes  STREAM  one entry per applied change, appended by the
-- script that applies it: op, table, id ("" none), record (the record's JSON
-- as stored, "" none), at (seconds since the epoch, as text). A script is
-- given the stream's key in KEYS; a Cluster, where one stream cannot share the
-- slot of every table, passes the table's base instead, and the script keeps
-- no feed. The stream keeps retain + 1 entries: once it holds more than retain
-- (or was ever trimmed), its first entry only marks where the retained changes
-- begin (its id is the oldest cursor; lua/changes.lua reads the feed).

local feed_key, feed_retain, feed_at, feed_added = '', 0, nil, 0

local function feed_open(key, base, retain)
  if key ~= base then feed_key, feed_retain = key, tonumber(retain) end
end

local function feed(op, name, id, json)
  if feed_key == '' then return end
  local at = '*'
  if not feed_at then
    local now = redis.call('TIME')
    feed_at = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
    -- a stream begun afresh (the first change, or the stream was lost: a
    -- FLUSHALL, a DEL) starts a millisecond past now, so that no cursor an
    -- earlier stream gave, in this very millisecond, names one of its entries
    if redis.call('EXISTS', feed_key) == 0 then
      local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + 1
      at = string.format('%.0f-0', ms)
    end
  end
  redis.call('XADD', feed_key, at, 'op', op, 'table', name, 'id', id or '',
    'record', json or '', 'at', feed_at)
  feed_added = feed_added + 1
end

-- after a script's last change: the stream back to its length
local function feed_trim()
  if feed_added > 0 then redis.call('XTRIM', feed_key, 'MAXLEN', feed_retain + 1) end
end

-- the id of the newest entry ("0-0" for none; "" without a feed): the cursor a
-- read made in the same script was made at
local function feed_cursor()
  if feed_key == '' then return '' end
  local last = redis.call('XREVRANGE', feed_key, '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
