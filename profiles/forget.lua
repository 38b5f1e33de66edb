-- Erase a customer and the visitors who logged in as them (the right to erasure), atomically.
-- Every key comes in KEYS (built by core/keyspace.py, laid out by profiles/store.py `forget`):
--   KEYS[1] the customer's visitors set, [2] erasures index, [3] the profile count,
--   then per erased profile 9 keys: its hash (the whole profile), the 7 keys older engines kept beside it (cart,
--   aff, items, sess, recent, items_ts, bought: core/keyspace.py LEGACY_PROFILE_SUFFIXES), erasure tombstone,
--   then the visitors' alias keys.
-- ARGV: 1 now (ms), 2 tombstone TTL (ms), 3 JSON list of the erased profile ids (in KEYS order),
--       4 JSON sorted list of the visitor ids read before (the script refuses with -1 when it changed)
-- Returns the number of profiles erased, or -1 when the visitors changed meanwhile (read again).

local pids = cjson.decode(ARGV[3])
local expected = cjson.decode(ARGV[4])
local now = ARGV[1]
local members = redis.call('SMEMBERS', KEYS[1])
table.sort(members)
if #members ~= #expected then return -1 end
for i = 1, #members do
  if members[i] ~= expected[i] then return -1 end
end
local base = 4
for _, pid in ipairs(pids) do
  if redis.call('DEL', KEYS[base]) == 1 then redis.call('DECR', KEYS[3]) end
  for k = base + 1, base + 7 do redis.call('DEL', KEYS[k]) end
  redis.call('SET', KEYS[base + 8], now, 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], now, pid)
  base = base + 9
end
for k = base, #KEYS do redis.call('DEL', KEYS[k]) end
redis.call('DEL', KEYS[1])
return #pids
