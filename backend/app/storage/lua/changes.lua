-- The change feed after a cursor: at most ARGV[3] changes of the tables asked
-- for, looking at most ARGV[4] entries. KEYS[1]: the stream. ARGV: since (a
-- cursor in canonical form, "" for the oldest retained), retain (the changes
-- the feed keeps), limit, scan, "1" when only some tables are asked for, then
-- their names. Answers {"gone", oldest} when changes after since are no longer
-- kept, {"unknown", oldest} when since is past the newest entry or names no
-- entry (a cursor this stream never gave: a flushed or failed-over store),
-- else {"ok",
-- the cursor to read on from, then id, op, table, id, record, at for each
-- change}.
--
-- The stream keeps retain + 1 entries: when it holds more than retain, or was
-- ever trimmed, its first entry is not served and its id is the oldest cursor
-- (a follower there has missed nothing retained); otherwise every entry is
-- served and the oldest cursor is "0-0".
local key = KEYS[1]
local since, retain = ARGV[1], tonumber(ARGV[2])
local limit, scan = tonumber(ARGV[3]), tonumber(ARGV[4])
local wanted = nil
if ARGV[5] == '1' then
  wanted = {}
  for n = 6, #ARGV do wanted[ARGV[n]] = true end
end

-- ids as "<ms>-<seq>", both in canonical decimal (no leading zeros)
local function parts(id)
  local dash = string.find(id, '-', 1, true)
  return string.sub(id, 1, dash - 1), string.sub(id, dash + 1)
end
local function less_number(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local ams, aseq = parts(a)
  local bms, bseq = parts(b)
  if ams ~= bms then return less_number(ams, bms) end
  return less_number(aseq, bseq)
end

local oldest, newest = '0-0', '0-0'
if redis.call('EXISTS', key) == 1 then
  local raw = redis.call('XINFO', 'STREAM', key)
  local info = {}
  for n = 1, #raw, 2 do info[raw[n]] = raw[n + 1] end
  newest = info['last-generated-id']
  local length, added, first = info['length'], info['entries-added'], info['first-entry']
  if first and (length > retain or (added and added > length)) then oldest = first[1] end
end
if since == '' then since = oldest end
if less(since, oldest) then return {'gone', oldest} end
if less(newest, since) then return {'unknown', oldest} end
-- a cursor this stream gave names one of its entries (or its oldest marker):
-- any other was given by a stream since flushed or lost in a failover
if since ~= oldest and #redis.call('XRANGE', key, since, since) == 0 then
  return {'unknown', oldest}
end
local out = {'ok', since}
if newest == since or limit <= 0 then return out end
local found = 0
for _, entry in ipairs(redis.call('XRANGE', key, '(' .. since, '+', 'COUNT', scan)) do
  if found >= limit then break end
  out[2] = entry[1]
  local f = {}
  local values = entry[2]
  for n = 1, #values, 2 do f[values[n]] = values[n + 1] end
  if not wanted or wanted[f.table] then
    found = found + 1
    local n = #out
    out[n + 1], out[n + 2], out[n + 3] = entry[1], f.op, f.table
    out[n + 4], out[n + 5], out[n + 6] = f.id, f.record, f.at
  end
end
return out
