-- Empty a table (mode "clear": its catalog of indexes stays) or drop it
-- ("drop"), refused while another table's records may name its records.
-- KEYS[1]: the base; KEYS[2]: the total counter, KEYS[3]: the catalog of
-- tables (the base again, both, in a Cluster); KEYS[4]: the change feed (the
-- base again: none); KEYS[5..]: the bases of the tables that may name its
-- records. ARGV: mode, table name, retain (the changes the feed keeps).
local base = KEYS[1]
local total_key = KEYS[2] ~= base and KEYS[2] or ''
local tables_key = KEYS[3] ~= base and KEYS[3] or ''
feed_open(KEYS[4], base, ARGV[3])
if redis.call('EXISTS', kk(base, 'm')) == 0 then return {'unknown'} end
for r = 5, #KEYS do
  if redis.call('HLEN', kk(KEYS[r], 'r')) > 0 then return {'referenced', tostring(r - 4)} end
end
local count = redis.call('HLEN', kk(base, 'r'))
local fields = catalog(base)
empty(base, fields)
if ARGV[1] == 'drop' then
  redis.call('UNLINK', kk(base, 'm'), kk(base, 'i'))
  if tables_key ~= '' then redis.call('ZREM', tables_key, ARGV[2]) end
end
if total_key ~= '' and count > 0 then redis.call('INCRBY', total_key, -count) end
feed('drop', ARGV[2])
feed_trim()
return {'ok', tostring(count)}
