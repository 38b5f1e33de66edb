-- The fields of a profile's hash (profiles/layout.py documents them), shared by the apply script (apply.lua) and
-- ecrm migrate-keys (profiles/migrate.py): items 'i:<item>' -> '<weight> <last time>[ <last purchase time>]', times
-- in ms written in base 36 (8 digits, against 13 in decimal; a purchase is an interaction, so the last time is never
-- before the purchase time), affinities 'a:<category>' -> forward-decayed affinity, cart lines 'k:<item>' ->
-- quantity, and the count of each kind ('#i', '#a', '#k'), kept as fields are added and removed; sessions: 'ss' the
-- count, 'sl' the last one's digest (28 bits of its SHA-1, in decimal).
local F_ITEM, F_AFF, F_CART = 'i:', 'a:', 'k:'
local N_ITEM, N_AFF, N_CART = '#i', '#a', '#k'
local F_SESSIONS, F_LAST_SESSION = 'ss', 'sl'
local F_COUNT = 'n:'  -- n:<type>
local F_FIRST_SEEN, F_LAST_SEEN, F_FIRST_PURCHASE, F_LAST_PURCHASE = 'fs', 'ls', 'fp', 'lp'
local F_ORDERS, F_REVENUE, F_MERGED, F_AFF_L = 'or', 'rv', 'mv', 'aL'
-- Key layout 3's long names and the field's name now (profiles/layout.py LEGACY_NAMES: the same pairs).
local LEGACY_NAMES = {
  {'first_seen', F_FIRST_SEEN}, {'last_seen', F_LAST_SEEN}, {'first_purchase', F_FIRST_PURCHASE},
  {'last_purchase', F_LAST_PURCHASE}, {'orders', F_ORDERS}, {'revenue', F_REVENUE}, {'merged_visitors', F_MERGED},
  {'aff_L', F_AFF_L},
}
local LEGACY_NAME, OLD_NAME = {}, {}
for _, pair in ipairs(LEGACY_NAMES) do
  LEGACY_NAME[pair[1]] = pair[2]
  OLD_NAME[pair[2]] = pair[1]
end
-- The event types' one-letter codes in the count fields 'n:<code>' (profiles/layout.py TYPE_CODES: the same pairs);
-- key layout 4 wrote 'n:<type>' (LEGACY_COUNT: that name -> the field now). A type without a code keeps its name.
local TYPE_CODES = {
  {'page_view', 'g'}, {'product_view', 'v'}, {'search', 's'}, {'add_to_cart', 'a'}, {'remove_from_cart', 'r'},
  {'purchase', 'p'}, {'claimed_purchase', 'q'}, {'recommendation_click', 'c'}, {'recommendation_view', 'w'},
}
local TYPE_CODE, LEGACY_COUNT = {}, {}
for _, pair in ipairs(TYPE_CODES) do
  TYPE_CODE[pair[1]] = pair[2]
  LEGACY_COUNT['n:' .. pair[1]] = 'n:' .. pair[2]
end

-- The value of the field f of hash h, or of its layout-3 name (read before a write renamed them: the checks).
local function scalar_get(h, f)
  local v = redis.call('HMGET', h, f, OLD_NAME[f])
  return v[1] or v[2]
end

-- A layout-3 profile's long names renamed in hash h (nothing to do for a profile written since: every profile seen
-- has a first-seen time, under one name or the other). Returns whether there were any.
local function upgrade_names(h)
  local old = {}
  for i, pair in ipairs(LEGACY_NAMES) do old[i] = pair[1] end
  local v = redis.call('HMGET', h, unpack(old))
  local any = false
  for i, pair in ipairs(LEGACY_NAMES) do
    if v[i] then
      redis.call('HSET', h, pair[2], v[i])
      redis.call('HDEL', h, pair[1])
      any = true
    end
  end
  return any
end

-- The field counting the events of type t.
local function count_field(t) return F_COUNT .. (TYPE_CODE[t] or t) end

-- Key layout 4's count fields 'n:<type>' of hash h added to their code's field and deleted. Returns whether there
-- were any.
local function upgrade_counts(h)
  local old = {}
  for i, pair in ipairs(TYPE_CODES) do old[i] = F_COUNT .. pair[1] end
  local v = redis.call('HMGET', h, unpack(old))
  local any = false
  for i, pair in ipairs(TYPE_CODES) do
    if v[i] then
      redis.call('HINCRBY', h, F_COUNT .. pair[2], v[i])
      redis.call('HDEL', h, old[i])
      any = true
    end
  end
  return any
end

-- A number as the shortest text that reads back as the same double (15 to 17 significant digits: 19.99, not
-- 19.989999999999998 as HINCRBYFLOAT writes it).
local function shortest(x)
  for p = 15, 16 do
    local s = string.format('%.' .. p .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

-- A time (ms, an integer >= 0) in base 36, and back.
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function b36(n)
  n = math.floor(n)
  if n <= 0 then return '0' end
  local s = ''
  while n > 0 do
    local d = n % 36
    s = string.sub(B36, d + 1, d + 1) .. s
    n = (n - d) / 36
  end
  return s
end
local function unb36(s) if s then return tonumber(s, 36) end end

-- An entry: weight, time, purchase time or nil (an older engine's plain weight has time 0 until ecrm migrate-keys).
local function item_parse(v)
  local w, t, p = string.match(v, '^(%S+) (%S+) (%S+)$')
  if w then return tonumber(w), unb36(t), unb36(p) end
  w, t = string.match(v, '^(%S+) (%S+)$')
  if w then return tonumber(w), unb36(t), nil end
  return tonumber(v), 0, nil
end

-- An entry of an older engine's items key (key layout 3: its times in decimal).
local function item_parse_decimal(v)
  local w, t, p = string.match(v, '^(%S+) (%S+) (%S+)$')
  if w then return tonumber(w), tonumber(t), tonumber(p) end
  w, t = string.match(v, '^(%S+) (%S+)$')
  if w then return tonumber(w), tonumber(t), nil end
  return tonumber(v), 0, nil
end

-- The entry of weight w, last time t and purchase time p (or nil).
local function item_value(w, t, p)
  if p and p > t then t = p end
  local v = shortest(w) .. ' ' .. b36(t)
  if p then v = v .. ' ' .. b36(p) end
  return v
end

-- Set the field prefix .. name of hash h to v; a new field counts one more in the count field n.
local function field_set(h, prefix, n, name, v)
  if redis.call('HSET', h, prefix .. name, v) == 1 then redis.call('HINCRBY', h, n, 1) end
end

-- Delete the field prefix .. name of hash h (the count field n follows; at 0 it goes).
local function field_del(h, prefix, n, name)
  if redis.call('HDEL', h, prefix .. name) == 1 and redis.call('HINCRBY', h, n, -1) <= 0 then
    redis.call('HDEL', h, n)
  end
end

-- Add weight w at time t (and a purchase at time p, or nil) to an item's entry in hash h: the later times kept.
local function item_fold(h, item, w, t, p)
  local v = redis.call('HGET', h, F_ITEM .. item)
  if v then
    local w0, t0, p0 = item_parse(v)
    w = (w0 or 0) + w
    if t0 and t0 > t then t = t0 end
    if p0 and ((not p) or p0 > p) then p = p0 end
  end
  field_set(h, F_ITEM, N_ITEM, item, item_value(w, t, p))
end

-- Add quantity d to a cart line of hash h (a line at 0 or below goes). Returns the new quantity.
local function cart_add(h, item, d)
  local f = F_CART .. item
  local existed = redis.call('HEXISTS', h, f) == 1
  local q = redis.call('HINCRBY', h, f, d)
  if q <= 0 then
    if existed then field_del(h, F_CART, N_CART, item) else redis.call('HDEL', h, f) end
  elseif not existed then
    redis.call('HINCRBY', h, N_CART, 1)
  end
  return q
end

-- Add inc to a category's affinity in hash h, kept to 6 significant digits (a ranking signal of a few categories:
-- each digit more costs a profile a byte per category; an increment a millionth of the sum is lost).
local function affinity_add(h, cat, inc)
  local cur = tonumber(redis.call('HGET', h, F_AFF .. cat)) or 0
  field_set(h, F_AFF, N_AFF, cat, string.format('%.6g', cur + inc))
end

-- Add x to the money field k of hash h (a double, written as its shortest exact text). Returns the new sum.
local function money_add(h, k, x)
  local v = (tonumber(redis.call('HGET', h, k)) or 0) + x
  redis.call('HSET', h, k, shortest(v))
  return v
end
