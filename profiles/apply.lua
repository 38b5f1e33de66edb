-- Apply a chunk of update plans (profiles/updates.py) to the profiles. Each plan is applied atomically with its
-- de-duplication marker: every value is checked before the plan's first write, and the marker is written with the
-- plan's effects, so a refused plan changes nothing and a chunk redelivered after a crash changes nothing twice.
--
-- Every key comes in KEYS (built by core/keyspace.py; the layout is written by profiles/script.py): this script
-- never builds a key name. Plans refer to keys by their index in KEYS.
--   KEYS[1] profiles index, [2] popular, [3] training log, [4] applied count, [5] interactions count,
--   [6] catalogue, [7] out of stock; then the keys the plans name.
-- ARGV: 1 plans (JSON array), 2 de-duplication TTL (ms), 3 recent items kept, 4 affinity half-life (ms),
--       5 trending half-life (ms), 6 half-lives per trending era, 7 training log max length,
--       8 profile TTL (ms, 0: none), 9 items kept per profile, 10 categories kept per profile,
--       11 cart lines per profile, 12 popular items kept
--
-- A plan's target profile was resolved by the caller from what it read (a visitor's alias, an item's category).
-- Each plan first checks that what was read still holds; when it does not, the script stops before that plan
-- and returns the statuses of the plans before it: the caller reads again and sends the rest.
-- Returns one status per plan: 1 applied, 0 duplicate (already applied), 2 skipped (the profile was erased after
-- the event), or a string: the reason the plan was refused (nothing written).

local plans = cjson.decode(ARGV[1])
local ttl = ARGV[2]
local recent_max = tonumber(ARGV[3])
local aff_h = tonumber(ARGV[4])
local tr_h = tonumber(ARGV[5])
local era_ms = tr_h * tonumber(ARGV[6])
local maxlen = ARGV[7]
local profile_ttl = tonumber(ARGV[8])
local items_max = tonumber(ARGV[9])
local cats_max = tonumber(ARGV[10])
local cart_max = tonumber(ARGV[11])
local popular_max = tonumber(ARGV[12])
local PROFILES, POPULAR, LOG, APPLIED, LOGGED, CATALOGUE, OOS = 1, 2, 3, 4, 5, 6, 7
local MAX_INT = 9007199254740991  -- 2^53 - 1: counters and cart quantities stay exact
local logged = 0  -- interactions written to the training log by this call
local popular_touched = false

local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function finite(x) return type(x) == 'number' and x == x and x ~= math.huge and x ~= -math.huge end

-- A profile's keys start at index b: hash, recent, cart, aff, items, items_ts, bought, sess.
local HASH, RECENT, CART, AFF, ITEMS, ITEMS_TS, BOUGHT, SESS = 0, 1, 2, 3, 4, 5, 6, 7
local function pk(b, which) return KEYS[b + which] end

local function hmin(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v < cur then redis.call('HSET', key, field, int(v)) end
end
local function hmax(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v > cur then redis.call('HSET', key, field, int(v)) end
end

-- ----- checks: every value a plan would write, before its first write -----

local function affinity_landmark(b, ts)
  return tonumber(redis.call('HGET', pk(b, HASH), 'aff_L')) or ts
end

local function refusal(u)
  if not finite(u.ts) then return 'timestamp is not a finite number' end
  if u.item then
    local it = u.item
    if not finite(it.price) or it.price < 0 then return 'item.price must be a finite number >= 0' end
    return nil
  end
  if u.order then
    if not finite(u.order) or u.order < 0 then return 'revenue must be a finite number >= 0' end
    local cur = tonumber(redis.call('HGET', pk(u.P, HASH), 'revenue')) or 0
    if not finite(cur + u.order) then return 'revenue would overflow the profile total' end
    if u.cp and not finite((cur + u.order) * (cur + u.order)) then return 'revenue too large for the campaign counters' end
  end
  if u.items then
    local L = affinity_landmark(u.P, u.ts)
    for _, it in ipairs(u.items) do
      local w, era = it[3], it[5]
      if not finite(w) then return 'interaction weight of ' .. it[1] .. ' is not finite' end
      if not finite(w * math.pow(2, (u.ts - L) / aff_h)) then return 'timestamp too far from the profile history' end
      if not finite(w * math.pow(2, (u.ts - era * era_ms) / tr_h)) then return 'timestamp outside the trending era' end
    end
  end
  if u.cart then
    local lines = redis.call('HLEN', pk(u.P, CART))
    for _, c in ipairs(u.cart) do
      local item, d = c[1], c[2]
      if not finite(d) or d ~= math.floor(d) then return 'cart quantity of ' .. item .. ' is not an integer' end
      local cur = tonumber(redis.call('HGET', pk(u.P, CART), item))
      if cur and math.abs(cur + d) > MAX_INT then return 'cart quantity of ' .. item .. ' would overflow' end
      if (not cur) and d > 0 then
        lines = lines + 1
        if lines > cart_max then return 'the cart already holds ' .. cart_max .. ' lines (ECRM_CART_LINES_MAX)' end
      end
    end
  end
  return nil
end

-- Was the event's profile (or the profile it lands in) erased after the event happened?
local function erased(u)
  if not u.er then return false end
  for _, k in ipairs(u.er) do
    local at = tonumber(redis.call('GET', KEYS[k]))
    if at and u.ts <= at then return true end
  end
  return false
end

-- ----- bounds: per-profile structures keep their newest entries -----

-- Past max entries, keep the newest 90% of hash `times` (item -> time), and drop the same items from `also`.
local function trim_by_time(b, times, also, max)
  if redis.call('HLEN', pk(b, times)) <= max then return end
  local h = redis.call('HGETALL', pk(b, times))
  local rows = {}
  for i = 1, #h, 2 do rows[#rows + 1] = {h[i], tonumber(h[i + 1]) or 0} end
  table.sort(rows, function(x, y) return x[2] > y[2] end)
  for i = math.floor(max * 0.9) + 1, #rows do
    redis.call('HDEL', pk(b, times), rows[i][1])
    if also then redis.call('HDEL', pk(b, also), rows[i][1]) end
  end
end

local function trim_categories(b)
  if redis.call('HLEN', pk(b, AFF)) <= cats_max then return end
  local h = redis.call('HGETALL', pk(b, AFF))
  local rows = {}
  for i = 1, #h, 2 do rows[#rows + 1] = {h[i], tonumber(h[i + 1]) or 0} end
  table.sort(rows, function(x, y) return x[2] > y[2] end)
  for i = math.floor(cats_max * 0.9) + 1, #rows do redis.call('HDEL', pk(b, AFF), rows[i][1]) end
end

local function keep_alive(b, extra)
  if profile_ttl <= 0 then return end
  for which = HASH, SESS do redis.call('PEXPIRE', pk(b, which), profile_ttl) end
  for _, k in ipairs(extra or {}) do redis.call('PEXPIRE', KEYS[k], profile_ttl) end
end

-- ----- effects -----

-- Merge the profile of an anonymous visitor (keys from s, id spid) into a customer's (d, dpid), then delete it.
local function merge(s, spid, d, dpid, camp_src, camp_dst)
  if camp_src then  -- the visitor's campaign variants go with them, served or not (the customer's own, if any, stay)
    local c = redis.call('HGETALL', KEYS[camp_src])
    for i = 1, #c, 2 do redis.call('HSETNX', KEYS[camp_dst], c[i], c[i + 1]) end
    redis.call('DEL', KEYS[camp_src])
  end
  local sh, dh = pk(s, HASH), pk(d, HASH)
  local f = redis.call('HGETALL', sh)
  if #f == 0 then return end
  local src_L = tonumber(redis.call('HGET', sh, 'aff_L'))
  local dst_L = tonumber(redis.call('HGET', dh, 'aff_L'))
  if src_L and not dst_L then
    redis.call('HSET', dh, 'aff_L', int(src_L))
    dst_L = src_L
  end
  for i = 1, #f, 2 do
    local k, v = f[i], f[i + 1]
    if string.sub(k, 1, 2) == 'n:' or k == 'orders' then
      redis.call('HINCRBY', dh, k, v)
    elseif k == 'revenue' then
      redis.call('HINCRBYFLOAT', dh, k, v)
    elseif k == 'first_seen' or k == 'first_purchase' then
      hmin(dh, k, tonumber(v))
    elseif k == 'last_seen' or k == 'last_purchase' then
      hmax(dh, k, tonumber(v))
    end
  end
  if src_L then
    local factor = math.pow(2, (src_L - dst_L) / aff_h)
    local a = redis.call('HGETALL', pk(s, AFF))
    for i = 1, #a, 2 do redis.call('HINCRBYFLOAT', pk(d, AFF), a[i], num(tonumber(a[i + 1]) * factor)) end
  end
  local items = redis.call('HGETALL', pk(s, ITEMS))
  for i = 1, #items, 2 do redis.call('HINCRBYFLOAT', pk(d, ITEMS), items[i], items[i + 1]) end
  for _, which in ipairs({ITEMS_TS, BOUGHT}) do
    local h = redis.call('HGETALL', pk(s, which))
    for i = 1, #h, 2 do hmax(pk(d, which), h[i], tonumber(h[i + 1])) end
  end
  local cart = redis.call('HGETALL', pk(s, CART))
  for i = 1, #cart, 2 do redis.call('HINCRBY', pk(d, CART), cart[i], cart[i + 1]) end
  local recent = redis.call('ZRANGE', pk(s, RECENT), 0, -1, 'WITHSCORES')
  for i = 1, #recent, 2 do redis.call('ZADD', pk(d, RECENT), 'GT', recent[i + 1], recent[i]) end
  redis.call('ZREMRANGEBYRANK', pk(d, RECENT), 0, -(recent_max + 1))
  if redis.call('EXISTS', pk(s, SESS)) == 1 then
    redis.call('PFMERGE', pk(d, SESS), pk(d, SESS), pk(s, SESS))
  end
  redis.call('HINCRBY', dh, 'merged_visitors', 1)
  for which = HASH, SESS do redis.call('DEL', pk(s, which)) end
  redis.call('ZREM', KEYS[PROFILES], spid)
  local last = redis.call('HGET', dh, 'last_seen')
  if last then redis.call('ZADD', KEYS[PROFILES], 'GT', last, dpid) end
end

-- A login links the visitor to the customer. The first login merges the visitor's history into the customer's;
-- a later login as another customer (a shared device) moves the link, not the history.
local function login(u)
  local l = u.login
  local cur = redis.call('HMGET', KEYS[l.alias], 'c', 't')
  local first = not cur[1]
  if first or (cur[1] ~= l.customer and u.ts > (tonumber(cur[2]) or 0)) then
    redis.call('HSET', KEYS[l.alias], 'c', l.customer, 't', int(u.ts))
    redis.call('SADD', KEYS[l.visitors], l.anon)
    if l.previous > 0 then redis.call('SREM', KEYS[l.previous], l.anon) end
  end
  if profile_ttl > 0 then redis.call('PEXPIRE', KEYS[l.alias], profile_ttl) end
  if first then merge(l.src, l.spid, u.P, u.pid, l.camp, u.CK) end
end

local touched_eras = {}
local function add_trending(item, w, ts, era, k1, k2)
  local trend = {[0] = k1, [1] = k2}
  for off = 0, 1 do
    local e = era + off
    redis.call('ZINCRBY', KEYS[trend[off]], num(w * math.pow(2, (ts - e * era_ms) / tr_h)), item)
    touched_eras[trend[off]] = true
  end
  redis.call('ZINCRBY', KEYS[POPULAR], num(w), item)
  popular_touched = true
end

local function add_affinity(b, cat, w, ts)
  local h = pk(b, HASH)
  local L = tonumber(redis.call('HGET', h, 'aff_L'))
  if not L then
    L = ts
    redis.call('HSET', h, 'aff_L', int(ts))
  end
  redis.call('HINCRBYFLOAT', pk(b, AFF), cat, num(w * math.pow(2, (ts - L) / aff_h)))
end

local function apply(u)
  local b, pid, ts = u.P, u.pid, u.ts
  local h = pk(b, HASH)
  redis.call('HINCRBY', h, 'n:' .. u.t, 1)
  local seen = redis.call('HMGET', h, 'first_seen', 'last_seen')
  local first, last = tonumber(seen[1]), tonumber(seen[2])
  if (not first) or ts < first then redis.call('HSET', h, 'first_seen', int(ts)) end
  if (not last) or ts > last then redis.call('HSET', h, 'last_seen', int(ts)) end
  redis.call('ZADD', KEYS[PROFILES], 'GT', int(ts), pid)
  if u.s then redis.call('PFADD', pk(b, SESS), u.s) end
  if u.items then
    for _, it in ipairs(u.items) do
      local item, cat, w, ik, era, t1, t2 = it[1], it[2], it[3], it[4], it[5], it[6], it[7]
      redis.call('ZADD', pk(b, RECENT), 'GT', int(ts), item)
      hmax(pk(b, ITEMS_TS), item, ts)
      if w ~= 0 then
        redis.call('HINCRBYFLOAT', pk(b, ITEMS), item, num(w))
        redis.call('XADD', KEYS[LOG], 'MAXLEN', '~', maxlen, '*', 'p', pid, 'i', item, 'w', num(w), 't', int(ts))
        logged = logged + 1
      end
      if w > 0 then
        if cat == '' then cat = redis.call('HGET', KEYS[ik], 'category') or '' end
        if cat ~= '' then add_affinity(b, cat, w, ts) end
        add_trending(item, w, ts, era, t1, t2)
      end
      if u.order then hmax(pk(b, BOUGHT), item, ts) end
    end
    redis.call('ZREMRANGEBYRANK', pk(b, RECENT), 0, -(recent_max + 1))
    trim_by_time(b, ITEMS_TS, ITEMS, items_max)
    trim_by_time(b, BOUGHT, nil, items_max)
    trim_categories(b)
  end
  if u.cart then
    for _, c in ipairs(u.cart) do
      local item, d = c[1], c[2]
      if d == 0 then
        redis.call('HDEL', pk(b, CART), item)
      elseif redis.call('HINCRBY', pk(b, CART), item, d) <= 0 then
        redis.call('HDEL', pk(b, CART), item)
      end
    end
  end
  if u.order then
    redis.call('HINCRBY', h, 'orders', 1)
    redis.call('HINCRBYFLOAT', h, 'revenue', num(u.order))
    hmin(h, 'first_purchase', ts)
    hmax(h, 'last_purchase', ts)
  end
  keep_alive(b, u.alive)
end

-- ----- campaigns (docs/campaigns.md): outcomes for the variant recorded in the profile -----
-- u.CK: the profile's campaign hash; u.cp: {name, counters key, attribution window (ms), 1: a click on its list}.
-- Only events after the profile's first exposure count; revenue per customer is kept in the profile so the
-- counters hold the sum and the sum of squares of per-customer revenue (Welch's test in the report).
local function campaigns(u)
  local ck = KEYS[u.CK]
  for _, c in ipairs(u.cp) do
    local name, sk, win, clicked = c[1], KEYS[c[2]], c[3], c[4]
    -- one read per campaign (a click carries no order, so ':lc' read here is the one an order is attributed by)
    local got = redis.call('HMGET', ck, name, name .. ':t', name .. ':rev', name .. ':lc')
    local v, first, lc = got[1], tonumber(got[2]), tonumber(got[4])
    if v and first and u.ts >= first then
      if clicked == 1 then
        redis.call('HINCRBY', sk, v .. ':clicks', 1)
        if redis.call('HSETNX', ck, name .. ':k', '1') == 1 then redis.call('HINCRBY', sk, v .. ':clickers', 1) end
        hmax(ck, name .. ':lc', u.ts)
      end
      if u.order then
        local prev = tonumber(got[3]) or 0
        local now = prev + u.order
        redis.call('HSET', ck, name .. ':rev', num(now))
        if redis.call('HSETNX', ck, name .. ':conv', '1') == 1 then redis.call('HINCRBY', sk, v .. ':converters', 1) end
        redis.call('HINCRBY', sk, v .. ':orders', 1)
        redis.call('HINCRBYFLOAT', sk, v .. ':revenue', num(u.order))
        redis.call('HINCRBYFLOAT', sk, v .. ':revenue_sq', num(now * now - prev * prev))
        if lc and u.ts - lc <= win then
          redis.call('HINCRBY', sk, v .. ':attributed_orders', 1)
          redis.call('HINCRBYFLOAT', sk, v .. ':attributed_revenue', num(u.order))
        end
      end
    end
  end
end

local function catalogue(it, ts)
  local k = KEYS[it.key]
  local cur = tonumber(redis.call('HGET', k, 'updated'))
  if cur and ts < cur then return end
  redis.call('HSET', k, 'title', it.title, 'category', it.category, 'price', num(it.price),
    'in_stock', int(it.in_stock), 'updated', int(ts))
  -- attributes (JSON) and image: an update without them removes them (an item event is the whole entry)
  if it.attrs and it.attrs ~= '' then redis.call('HSET', k, 'attrs', it.attrs) else redis.call('HDEL', k, 'attrs') end
  if it.image and it.image ~= '' then redis.call('HSET', k, 'image', it.image) else redis.call('HDEL', k, 'image') end
  redis.call('SADD', KEYS[CATALOGUE], it.id)
  if it.in_stock == 1 then
    redis.call('SREM', KEYS[OOS], it.id)
  else
    redis.call('SADD', KEYS[OOS], it.id)
  end
  if it.old_cat > 0 then redis.call('SREM', KEYS[it.old_cat], it.id) end
  redis.call('SADD', KEYS[it.new_cat], it.id)
end

-- Does what the caller read still hold? (the customer a visitor logged in as; an item's current category)
local function still_holds(u)
  if u.alias and (redis.call('HGET', KEYS[u.alias], 'c') or '') ~= u.expect then return false end
  if u.login and (redis.call('HGET', KEYS[u.login.alias], 'c') or '') ~= u.login.expect then return false end
  if u.item and (redis.call('HGET', KEYS[u.item.key], 'category') or '') ~= u.item.expect then return false end
  return true
end

local status = {}
local applied = 0
for i, u in ipairs(plans) do
  if not still_holds(u) then break end
  if redis.call('EXISTS', KEYS[u.seen]) == 1 then
    status[i] = 0
  else
    local why = refusal(u)
    if why then
      status[i] = why
    elseif erased(u) then
      status[i] = 2
    else
      if u.item then
        catalogue(u.item, u.ts)
      else
        if u.login then login(u) end
        apply(u)
        if u.cp then campaigns(u) end
      end
      redis.call('SET', KEYS[u.seen], '1', 'PX', ttl)
      status[i] = 1
      applied = applied + 1
    end
  end
end
for key, _ in pairs(touched_eras) do redis.call('PEXPIRE', KEYS[key], int(era_ms * 3)) end
if popular_touched and redis.call('ZCARD', KEYS[POPULAR]) > popular_max * 1.1 then
  redis.call('ZREMRANGEBYRANK', KEYS[POPULAR], 0, -(popular_max + 1))
end
if applied > 0 then redis.call('INCRBY', KEYS[APPLIED], applied) end
if logged > 0 then redis.call('INCRBY', KEYS[LOGGED], logged) end
return status
