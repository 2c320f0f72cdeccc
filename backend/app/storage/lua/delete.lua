-- Delete a record at one of the expected versions, refused while records of
-- another table name it. KEYS[1]: the base; KEYS[2]: the total counter (the base
-- again in a Cluster); KEYS[3]: the change feed (the base again: none);
-- KEYS[4..]: the base of each table whose records may name it.
-- ARGV: id, expected versions ("" any, "=v1,v2" those), the table's name, retain (the changes
-- the feed keeps), R, R times (field, key of the id).
local base = KEYS[1]
local total_key = KEYS[2] ~= base and KEYS[2] or ''
local id, expected = ARGV[1], ARGV[2]
feed_open(KEYS[3], base, ARGV[4])
local old = redis.call('HGET', kk(base, 'r'), id)
if not old then
  if redis.call('EXISTS', kk(base, 'm')) == 0 then return {'no_table'} end
  return {'unknown'}
end
if not allowed(old, expected) then return {'changed'} end
local nr = tonumber(ARGV[5])
for r = 1, nr do
  local field, key = ARGV[4 + 2 * r], ARGV[5 + 2 * r]
  if holder(kk(KEYS[3 + r], 'x:' .. field), key) then return {'referenced', tostring(r)} end
end
local fields = catalog(base)
unindex(base, fields, id)
redis.call('ZREM', kk(base, 'o'), id)
redis.call('HDEL', kk(base, 'r'), id)
redis.call('HDEL', kk(base, 's'), id)
redis.call('HINCRBY', kk(base, 'm'), 'bytes', -#old)
redis.call('HINCRBY', kk(base, 'm'), 'gen', 1)
if total_key ~= '' then redis.call('INCRBY', total_key, -1) end
feed('delete', ARGV[3], id)
feed_trim()
return {'ok'}
