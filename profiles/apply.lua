-- The profile part of applying a chunk of update plans (profiles/updates.py). Each plan is applied atomically with
-- its de-duplication marker: every value is checked before the plan's first write, and the marker is written with
-- the plan's effects, so a refused plan changes nothing and a chunk redelivered after a crash changes nothing twice.
--
-- The script is this file, apply_global.lua (the effects across profiles: trending, popular, the training log,
-- the profile count, counters, campaign counters, catalogue sets) and apply_main.lua (which runs them), joined by
-- profiles/script.py. This part writes only the slot of the plans' profile (or item): its effects on global keys
-- are recorded as operations (`G`, below) that apply_global.lua applies, in the same call on a single node
-- (ARGV[13] 'one') or in a second call on the global slot on a Redis Cluster ('profile' then 'global').
--
-- Every key comes in KEYS (built by core/keyspace.py; the layout is written by profiles/script.py): the script
-- never builds a key name. Plans refer to keys by their index in KEYS, global keys by name through the map in
-- ARGV[14] (name -> index in KEYS).
-- ARGV: 1 plans (JSON array; on 'global': the global records; on 'handoff': the logins), 2 de-duplication TTL
--       (ms; single node: the window ECRM_DEDUPE_WINDOW_S), 3 recent items kept (read side only), 4 affinity
--       half-life (ms), 5 trending half-life (ms), 6 half-lives per trending
--       era, 7 training log max length, 8 profile TTL (ms, 0: none), 9 items kept per profile, 10 categories kept
--       per profile, 11 cart lines per profile, 12 popular items kept, 13 mode, 14 global keys (JSON object),
--       15 event ids kept per profile's de-duplication set (single node), 16 anonymous profile TTL (ms, 0: none),
--       17 items kept per trending era, 18 period of the browsers' bounds (ms), 19 items per visitor and period,
--       20 items per client and period, 21 '1': once the catalogue has items, only they enter popular and trending
--
-- A plan's target profile was resolved by the caller from what it read (a visitor's alias, an item's category,
-- tombstones in other slots). Each plan first checks that what was read still holds where it is in this slot;
-- when it does not, the script stops before that plan and returns the statuses of the plans before it: the
-- caller reads again and sends the rest.
-- Status per plan: 1 applied, 0 duplicate (already applied), 2 skipped (the profile was erased after the event),
-- or a string: the reason the plan was refused (nothing written).

local mode = ARGV[13]
local GK = cjson.decode(ARGV[14])
local ttl = ARGV[2]
local aff_h = tonumber(ARGV[4])
local tr_h = tonumber(ARGV[5])
local era_ms = tr_h * tonumber(ARGV[6])
local maxlen = ARGV[7]
local profile_ttl = tonumber(ARGV[8])
local items_max = tonumber(ARGV[9])
local cats_max = tonumber(ARGV[10])
local cart_max = tonumber(ARGV[11])
local popular_max = tonumber(ARGV[12])
local dedupe_max = tonumber(ARGV[15])
local anon_ttl = tonumber(ARGV[16])
local trending_max = tonumber(ARGV[17])
local shared_ms = tonumber(ARGV[18])
local per_visitor = tonumber(ARGV[19])
local per_client = tonumber(ARGV[20])
local catalogue_only = ARGV[21] == '1'
local MAX_INT = 9007199254740991  -- 2^53 - 1: counters and cart quantities stay exact

local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function finite(x) return type(x) == 'number' and x == x and x ~= math.huge and x ~= -math.huge end

-- A profile is one hash, KEYS[b]: its fields (items 'i:', affinities 'a:', cart lines 'k:', their counts, sessions)
-- are written by the functions of items.lua (joined before this file; profiles/layout.py documents them).

local function hmin(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v < cur then redis.call('HSET', key, field, int(v)) end
end
local function hmax(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v > cur then redis.call('HSET', key, field, int(v)) end
end

-- An item's weight in a profile (nil: no entry).
local function item_weight(b, item)
  local v = redis.call('HGET', KEYS[b], F_ITEM .. item)
  if not v then return nil end
  return (item_parse(v))
end

-- The global effects of the plan being applied, in order (numbers as exact strings):
--   {'n', delta} the profile count (one more for a new hash, one less for a visitor's merged away),
--   {'x', pid, item, w, ts} training log,
--   {'t', item, trending of the era, of the next, increment of each, w} trending and popular,
--   {'b', pid, client, item, w, trending of the era, of the next, era factor of each, ts} a browser's interaction:
--   the training log, trending and popular, within the per-period bounds of its visitor and client,
--   {'c', campaign, field, delta, 1: a float}, (trending and campaign keys by their name in the map ARGV[14]),
--   {'k', item, in stock 0/1, old category, new category} catalogue sets.
local G = {}
local function emit(op) G[#G + 1] = op end

-- ----- checks: every value a plan would write, before its first write -----

local function affinity_landmark(b, ts)
  return tonumber(scalar_get(KEYS[b], F_AFF_L)) or ts
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
    local cur = tonumber(scalar_get(KEYS[u.P], F_REVENUE)) or 0
    if not finite(cur + u.order) then return 'revenue would overflow the profile total' end
    if u.cp and not finite((cur + u.order) * (cur + u.order)) then return 'revenue too large for the campaign counters' end
  end
  if u.items then
    local L = affinity_landmark(u.P, u.ts)
    for _, it in ipairs(u.items) do
      local w, era = it[3], it[5]
      if not finite(w) then return 'interaction weight of ' .. it[1] .. ' is not finite' end
      local cur = item_weight(u.P, it[1])
      if cur and not finite(cur + w) then return 'interaction weight of ' .. it[1] .. ' would overflow' end
      if not finite(w * math.pow(2, (u.ts - L) / aff_h)) then return 'timestamp too far from the profile history' end
      if not finite(w * math.pow(2, (u.ts - era * era_ms) / tr_h)) then return 'timestamp outside the trending era' end
    end
  end
  if u.cart then
    local lines = tonumber(redis.call('HGET', KEYS[u.P], N_CART)) or 0
    for _, c in ipairs(u.cart) do
      local item, d = c[1], c[2]
      if not finite(d) or d ~= math.floor(d) then return 'cart quantity of ' .. item .. ' is not an integer' end
      local cur = tonumber(redis.call('HGET', KEYS[u.P], F_CART .. item))
      if cur and math.abs(cur + d) > MAX_INT then return 'cart quantity of ' .. item .. ' would overflow' end
      if (not cur) and d > 0 then
        lines = lines + 1
        if lines > cart_max then return 'the cart already holds ' .. cart_max .. ' lines (ECRM_CART_LINES_MAX)' end
      end
    end
  end
  return nil
end

-- Was the event's profile (or the profile it lands in) erased after the event happened? (u.er: tombstones in this
-- slot; u.erx: the latest tombstone the caller read in other slots, on a Redis Cluster)
local function erased(u)
  if u.erx and u.ts <= u.erx then return true end
  if not u.er then return false end
  for _, k in ipairs(u.er) do
    local at = tonumber(redis.call('GET', KEYS[k]))
    if at and u.ts <= at then return true end
  end
  return false
end

-- ----- bounds: per-profile structures keep their newest entries -----

-- The fields of hash h starting with prefix: {name without the prefix, value} rows.
local function fields_of(h, prefix)
  local all = redis.call('HGETALL', h)
  local rows = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == prefix then rows[#rows + 1] = {string.sub(all[i], 3), all[i + 1]} end
  end
  return rows
end

-- Past max fields of a kind (prefix, its count field n), keep the 90% of greatest key(value): the newest items, the
-- strongest categories. The count is set again from what is there (nothing read otherwise: the count decides).
local function trim(b, prefix, n, max, key)
  local h = KEYS[b]
  if (tonumber(redis.call('HGET', h, n)) or 0) <= max then return end
  local rows = fields_of(h, prefix)
  for _, r in ipairs(rows) do r[3] = key(r[2]) or 0 end
  table.sort(rows, function(x, y) return x[3] > y[3] end)
  local keep = math.min(#rows, math.floor(max * 0.9))
  for i = keep + 1, #rows do redis.call('HDEL', h, prefix .. rows[i][1]) end
  redis.call('HSET', h, n, keep)
end
local function item_time(v) return select(2, item_parse(v)) end
local function trim_items(b) trim(b, F_ITEM, N_ITEM, items_max, item_time) end
local function trim_categories(b) trim(b, F_AFF, N_AFF, cats_max, tonumber) end

local function keep_alive(b, extra, anonymous)
  local t = profile_ttl
  if anonymous then t = anon_ttl end
  if t <= 0 then return end
  redis.call('PEXPIRE', KEYS[b], t)
  for _, k in ipairs(extra or {}) do redis.call('PEXPIRE', KEYS[k], t) end
end

-- ----- effects -----

local function unhex(h) return (string.gsub(h, '..', function(x) return string.char(tonumber(x, 16)) end)) end

-- A visitor's profile (hash KEYS[s], campaign hash camp) as data, deleted from its slot: what a login merges into
-- the customer's.
local function take_profile(s, camp)
  local v = {h = redis.call('HGETALL', KEYS[s]), camp = redis.call('HGETALL', KEYS[camp])}
  redis.call('DEL', KEYS[camp], KEYS[s])
  return v
end

-- Count a session: one more when its digest differs from the last one's (a return to an older session counts
-- again: profiles/layout.py). The digest: 28 bits of the id's SHA-1 written in decimal, which the hash's listpack
-- keeps as a 4-byte integer (6 bytes an entry, against 10 for 8 hex digits).
local function session_seen(h, s)
  local d = string.format('%d', tonumber(string.sub(redis.sha1hex(s), 1, 7), 16))
  if redis.call('HGET', h, F_LAST_SESSION) ~= d then
    redis.call('HSET', h, F_LAST_SESSION, d)
    redis.call('HINCRBY', h, F_SESSIONS, 1)
  end
end

-- Merge a visitor's profile v (from take_profile) into a customer's (hash KEYS[d]), field by
-- field: counts add, first times the earlier, last times the later, items as item_fold, affinities brought to the
-- customer's landmark, cart quantities add, session counts add (the last session: the one of whoever was seen
-- last). camp_dst: the customer's campaign hash; tmp: a scratch key of the customer's slot (an older engine's
-- hand-off of a HyperLogLog).
local function merge_from(v, d, camp_dst, tmp)
  for i = 1, #v.camp, 2 do redis.call('HSETNX', KEYS[camp_dst], v.camp[i], v.camp[i + 1]) end
  local f = v.h
  if #f == 0 then return end
  local dh = KEYS[d]
  local src = {}
  for i = 1, #f, 2 do src[LEGACY_NAME[f[i]] or f[i]] = f[i + 1] end  -- a layout-3 visitor's long names
  upgrade_names(dh)
  upgrade_counts(dh)
  local src_L = tonumber(src[F_AFF_L])
  local dst = redis.call('HMGET', dh, F_AFF_L, F_LAST_SEEN)
  local dst_L = tonumber(dst[1])
  local created = not dst[2]  -- the customer's hash is made by this merge (every profile written has a last seen)
  if src_L and not dst_L then
    redis.call('HSET', dh, F_AFF_L, int(src_L))
    dst_L = src_L
  end
  local factor = 1
  if src_L then factor = math.pow(2, (src_L - dst_L) / aff_h) end
  if src[F_LAST_SESSION] and (tonumber(src[F_LAST_SEEN]) or 0) >= (tonumber(dst[2]) or 0) then
    redis.call('HSET', dh, F_LAST_SESSION, src[F_LAST_SESSION])
  end
  for i = 1, #f, 2 do
    local k, x = LEGACY_NAME[f[i]] or LEGACY_COUNT[f[i]] or f[i], f[i + 1]  -- layout 3's and 4's names
    local kind = string.sub(k, 1, 2)
    if kind == F_ITEM then
      local w, t, bt = item_parse(x)
      item_fold(dh, string.sub(k, 3), w, t, bt)
    elseif kind == F_AFF then
      if src_L then affinity_add(dh, string.sub(k, 3), tonumber(x) * factor) end
    elseif kind == F_CART then
      cart_add(dh, string.sub(k, 3), tonumber(x))
    elseif kind == F_COUNT or k == F_ORDERS or k == F_SESSIONS then
      redis.call('HINCRBY', dh, k, x)
    elseif k == F_REVENUE then
      money_add(dh, k, tonumber(x))
    elseif k == F_FIRST_SEEN or k == F_FIRST_PURCHASE then
      hmin(dh, k, tonumber(x))
    elseif k == F_LAST_SEEN or k == F_LAST_PURCHASE then
      hmax(dh, k, tonumber(x))
    end
  end
  -- a hand-off written by an older engine (Redis Cluster, key layout 3 or before): the keys beside the hash
  if src_L then
    for i = 1, #(v.aff or {}), 2 do affinity_add(dh, v.aff[i], tonumber(v.aff[i + 1]) * factor) end
  end
  for i = 1, #(v.items or {}), 2 do
    local w, t, bt = item_parse_decimal(v.items[i + 1])
    item_fold(dh, v.items[i], w, t, bt)
  end
  for _, older in ipairs({v.items_ts or {}, v.recent or {}}) do
    for i = 1, #older, 2 do item_fold(dh, older[i], 0, tonumber(older[i + 1]), nil) end
  end
  local bought = v.bought or {}
  for i = 1, #bought, 2 do item_fold(dh, bought[i], 0, 0, tonumber(bought[i + 1])) end
  for i = 1, #(v.cart or {}), 2 do cart_add(dh, v.cart[i], tonumber(v.cart[i + 1])) end
  if v.sess and v.sess ~= '' then
    redis.call('SET', KEYS[tmp], unhex(v.sess))
    redis.call('HINCRBY', dh, F_SESSIONS, redis.call('PFCOUNT', KEYS[tmp]))
    redis.call('DEL', KEYS[tmp])
  end
  trim_items(d)
  trim_categories(d)
  redis.call('HINCRBY', dh, F_MERGED, 1)
  if not created then emit({'n', -1}) end  -- the visitor's hash went (unless it became the customer's)
end

-- A login links the visitor to the customer. The first login merges the visitor's history into the customer's;
-- a later login as another customer (a shared device) moves the link, not the history. On a single node the
-- visitor's keys are here (l.alias); on a Redis Cluster the caller ran `handoff` in the visitor's slot first and
-- passes its answer (l.linked, l.data).
local function login(u)
  local l = u.login
  if not l.alias then
    if l.linked == 1 then redis.call('SADD', KEYS[l.visitors], l.anon) end
    if l.data ~= '' then merge_from(cjson.decode(l.data), u.P, u.CK, u.tmp) end
    return
  end
  local cur = redis.call('HMGET', KEYS[l.alias], 'c', 't')
  local first = not cur[1]
  if first or (cur[1] ~= l.customer and u.ts > (tonumber(cur[2]) or 0)) then
    redis.call('HSET', KEYS[l.alias], 'c', l.customer, 't', int(u.ts))
    redis.call('SADD', KEYS[l.visitors], l.anon)
    if l.previous > 0 then redis.call('SREM', KEYS[l.previous], l.anon) end
  end
  if profile_ttl > 0 then redis.call('PEXPIRE', KEYS[l.alias], profile_ttl) end
  if first then merge_from(take_profile(l.src, l.camp), u.P, u.CK, u.tmp) end
end

-- Redis Cluster, a login's first step, in the visitor's slot: link the visitor to the customer and, at the first
-- login, hand their profile over (kept under the login's name `by` in the hand-off hash until the customer's
-- slot took it). Idempotent: the same login again gets the same answer.
-- e: {alias, hand, customer, ts, by, src, camp}. Returns {linked 0/1, previous customer or '', data or ''}.
local function handoff(e)
  local cur = redis.call('HMGET', KEYS[e.alias], 'c', 't')
  local out
  if (not cur[1]) or (cur[1] ~= e.customer and e.ts > (tonumber(cur[2]) or 0)) then
    redis.call('HSET', KEYS[e.alias], 'c', e.customer, 't', int(e.ts))
    local data = ''
    if not cur[1] then data = cjson.encode(take_profile(e.src, e.camp)) end
    out = {1, cur[1] or '', data}
    redis.call('HSET', KEYS[e.hand], e.by, cjson.encode(out))
    redis.call('PEXPIRE', KEYS[e.hand], ttl)
  else
    local kept = redis.call('HGET', KEYS[e.hand], e.by)
    if kept then out = cjson.decode(kept) else out = {cur[1] == e.customer and 1 or 0, '', ''} end
  end
  if profile_ttl > 0 then redis.call('PEXPIRE', KEYS[e.alias], profile_ttl) end
  return out
end

local function add_trending(item, w, ts, era, tr1, tr2)
  emit({'t', item, tr1, tr2, num(w * math.pow(2, (ts - era * era_ms) / tr_h)),
        num(w * math.pow(2, (ts - (era + 1) * era_ms) / tr_h)), num(w)})
end

local function add_affinity(b, cat, w, ts)
  local h = KEYS[b]
  local L = tonumber(redis.call('HGET', h, F_AFF_L))
  if not L then
    L = ts
    redis.call('HSET', h, F_AFF_L, int(ts))
  end
  affinity_add(h, cat, w * math.pow(2, (ts - L) / aff_h))
end

local function apply(u)
  local b, pid, ts = u.P, u.pid, u.ts
  local h = KEYS[b]
  local counted = count_field(u.t)
  local legacy = F_COUNT .. u.t  -- key layout 4's name of the count (the same field for a type without a code)
  local seen = redis.call('HMGET', h, F_FIRST_SEEN, F_LAST_SEEN, 'first_seen', legacy)
  if legacy ~= counted and seen[4] then upgrade_counts(h) end  -- layout 4's count names
  if seen[3] and upgrade_names(h) then seen = redis.call('HMGET', h, F_FIRST_SEEN, F_LAST_SEEN) end  -- layout 3
  redis.call('HINCRBY', h, counted, 1)
  local first, last = tonumber(seen[1]), tonumber(seen[2])
  if (not first) and (not last) then emit({'n', 1}) end  -- a new profile hash (every profile has its times)
  if (not first) or ts < first then redis.call('HSET', h, F_FIRST_SEEN, int(ts)) end
  if (not last) or ts > last then redis.call('HSET', h, F_LAST_SEEN, int(ts)) end
  if u.s then session_seen(h, u.s) end
  if u.items then
    for _, it in ipairs(u.items) do
      local item, cat, w, ik, era, tr1, tr2 = it[1], it[2], it[3], it[4], it[5], it[6], it[7]
      item_fold(h, item, w, ts, u.bo and ts or nil)
      if w ~= 0 then
        if not u.bd then emit({'x', pid, item, num(w), int(ts)}) end
      end
      if w > 0 then
        if cat == '' and ik > 0 then cat = redis.call('HGET', KEYS[ik], 'category') or '' end
        if cat ~= '' then add_affinity(b, cat, w, ts) end
        if u.bd then
          emit({'b', pid, u.bd, item, num(w), tr1, tr2, num(math.pow(2, (ts - era * era_ms) / tr_h)),
                num(math.pow(2, (ts - (era + 1) * era_ms) / tr_h)), int(ts)})
        else
          add_trending(item, w, ts, era, tr1, tr2)
        end
      end
    end
    trim_items(b)
    trim_categories(b)
  end
  if u.cart then
    for _, c in ipairs(u.cart) do
      local item, d = c[1], c[2]
      if d == 0 then field_del(h, F_CART, N_CART, item) else cart_add(h, item, d) end
    end
  end
  if u.order then
    redis.call('HINCRBY', h, F_ORDERS, 1)
    money_add(h, F_REVENUE, u.order)
    hmin(h, F_FIRST_PURCHASE, ts)
    hmax(h, F_LAST_PURCHASE, ts)
  end
  keep_alive(b, u.alive, u.an)
end

-- ----- campaigns (docs/campaigns.md): outcomes for the variant recorded in the profile -----
-- u.CK: the profile's campaign hash; u.cp: {name, attribution window (ms), 1: a click on its list, the click's
-- recommendation_id digest}. Only events after the profile's first exposure count; a click only on a list served
-- to this profile (its digest among the newest ones the API recorded in ':r', profiles/campaigns.py); revenue per
-- customer is kept in the profile so the counters hold the sum and the sum of squares of per-customer revenue
-- (Welch's test in the report).
local function served_here(list, digest)
  return digest ~= nil and digest ~= '' and list ~= false and list ~= nil
    and string.find(' ' .. list .. ' ', ' ' .. digest .. ' ', 1, true) ~= nil
end

local function campaigns(u)
  local ck = KEYS[u.CK]
  for _, c in ipairs(u.cp) do
    local name, win, clicked = c[1], c[2], c[3]
    -- one read per campaign (a click carries no order, so ':lc' read here is the one an order is attributed by)
    local got = redis.call('HMGET', ck, name, name .. ':t', name .. ':rev', name .. ':lc', name .. ':r')
    local v, first, lc = got[1], tonumber(got[2]), tonumber(got[4])
    if v and first and u.ts >= first then
      if clicked == 1 and served_here(got[5], c[4]) then
        emit({'c', name, v .. ':clicks', '1', 0})
        if redis.call('HSETNX', ck, name .. ':k', '1') == 1 then emit({'c', name, v .. ':clickers', '1', 0}) end
        hmax(ck, name .. ':lc', u.ts)
      end
      if u.order then
        local prev = tonumber(got[3]) or 0
        local now = prev + u.order
        redis.call('HSET', ck, name .. ':rev', num(now))
        if redis.call('HSETNX', ck, name .. ':conv', '1') == 1 then emit({'c', name, v .. ':converters', '1', 0}) end
        emit({'c', name, v .. ':orders', '1', 0})
        emit({'c', name, v .. ':revenue', num(u.order), 1})
        emit({'c', name, v .. ':revenue_sq', num(now * now - prev * prev), 1})
        if lc and u.ts - lc <= win then
          emit({'c', name, v .. ':attributed_orders', '1', 0})
          emit({'c', name, v .. ':attributed_revenue', num(u.order), 1})
        end
      end
    end
  end
end

-- A catalogue event: the item's hash here, its sets (catalogue, out of stock, categories) globally.
local function catalogue(it, ts)
  local k = KEYS[it.key]
  local cur = tonumber(redis.call('HGET', k, 'updated'))
  if cur and ts < cur then return end
  redis.call('HSET', k, 'title', it.title, 'category', it.category, 'price', num(it.price),
    'in_stock', int(it.in_stock), 'updated', int(ts))
  -- attributes (JSON) and image: an update without them removes them (an item event is the whole entry)
  if it.attrs and it.attrs ~= '' then redis.call('HSET', k, 'attrs', it.attrs) else redis.call('HDEL', k, 'attrs') end
  if it.image and it.image ~= '' then redis.call('HSET', k, 'image', it.image) else redis.call('HDEL', k, 'image') end
  emit({'k', it.id, it.in_stock, it.old, it.category})
end

-- Does what the caller read still hold, where it is in this slot? (the customer a visitor logged in as; an item's
-- current category)
local function still_holds(u)
  if u.alias and (redis.call('HGET', KEYS[u.alias], 'c') or '') ~= u.expect then return false end
  if u.login and u.login.alias and (redis.call('HGET', KEYS[u.login.alias], 'c') or '') ~= u.login.expect then
    return false
  end
  if u.item and (redis.call('HGET', KEYS[u.item.key], 'category') or '') ~= u.item.expect then return false end
  return true
end

-- Was the plan applied before? Its marker (in this slot; u.dup: the visitor's own, where it was applied before they
-- logged in, read by the caller in its slot on a Redis Cluster). On a single node (u.sd) the marker is the member
-- u.sd of the de-duplication set of the event's own profile (a visitor's own set for their events after a login
-- too); on a cluster a key of its own in the plan's slot (it holds a record), named with the visitor's id when the
-- event lands in the customer they logged in as.
local function marker(u)
  if u.dup then return '1' end
  if u.sd then
    if redis.call('ZSCORE', KEYS[u.seen], u.sd) then return '1' end
    return nil
  end
  return redis.call('GET', KEYS[u.seen])
end

-- Remember an applied plan in its profile's de-duplication set, scored by when: server time in 1/1024 ms, plus one
-- per plan of the call, so the order of a chunk is kept (an integer: listpacks store it in a few bytes). Entries
-- past the TTL and beyond the newest dedupe_max go, and the set expires a TTL after its last write.
local now_ms, seq = nil, 0
local function remember(u)
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  seq = seq + 1
  local k = KEYS[u.seen]
  redis.call('ZADD', k, int(now_ms * 1024 + seq), u.sd)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. int((now_ms - tonumber(ttl)) * 1024))
  if redis.call('ZCARD', k) > dedupe_max then redis.call('ZREMRANGEBYRANK', k, 0, -(dedupe_max + 1)) end
  redis.call('PEXPIRE', k, ttl)
end

-- Single node: a plan read from Kafka (u.f '<topic>:<partition>', u.o offset, u.pt when it was produced) at or below
-- the highest offset applied of its partition ({g}:offsets) is a redelivery: the worker applies each partition in
-- offset order and acks only what was written. That decides for messages produced longer than the de-duplication
-- window ago (their ids may be gone from the set); a younger one is judged by the set, which remembers every event
-- applied within the window, so a topic started again from offset 0 (an embedded broker restarted, a topic created
-- again) loses nothing. A refused plan changes nothing, so its offset is remembered apart ({g}:refused, the newest
-- 100,000) and a redelivery of it is judged again.
local high = {}  -- partition -> highest offset applied, as read and raised by this call
local high_changed = {}
local REFUSED_MAX = 100000
local function high_of(f)
  local cur = high[f]
  if cur == nil then
    cur = tonumber(redis.call('HGET', KEYS[GK.offsets], f)) or -1
    high[f] = cur
  end
  return cur
end
local function offset_seen(u)
  if not u.f or not u.pt then return false end
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if u.pt > now_ms - tonumber(ttl) then return false end  -- within the window: the set decides
  if u.o > high_of(u.f) then return false end
  return not redis.call('ZSCORE', KEYS[GK.refused], u.f .. ':' .. int(u.o))
end
local function offset_done(u, refused)
  if not u.f then return end
  if refused then
    local t = redis.call('TIME')
    redis.call('ZADD', KEYS[GK.refused], t[1], u.f .. ':' .. int(u.o))
    if redis.call('ZCARD', KEYS[GK.refused]) > REFUSED_MAX then
      redis.call('ZREMRANGEBYRANK', KEYS[GK.refused], 0, -(REFUSED_MAX + 1))
    end
  elseif u.o > high_of(u.f) then
    high[u.f] = u.o
    high_changed[u.f] = true
  end
end
local function offsets_finish()
  for f, _ in pairs(high_changed) do redis.call('HSET', KEYS[GK.offsets], f, int(high[f])) end
end

-- Apply plans in this slot. Returns the statuses and, per plan, its global record {f, o, g}: the plan's global
-- operations g and the delivery (f: '<topic>:<partition>', o: offset) that applied it. With `keep` (Redis Cluster)
-- the records are JSON, kept in the markers, and given back for a duplicate of the same delivery (a redelivery
-- whose global call may not have run); else (one call for both parts) they are tables, given for applied plans.
local function run_profiles(plans, keep)
  local status, recs = {}, {}
  for i, u in ipairs(plans) do
    if not still_holds(u) then break end
    local m
    if keep then m = marker(u) else m = (offset_seen(u) and '1') or marker(u) end
    recs[i] = false
    if m then
      status[i] = 0
      if not keep then offset_done(u, false) end
      if keep and u.f and m ~= '1' then
        local r = cjson.decode(m)
        if r.f == u.f and r.o == u.o then recs[i] = m end
      end
    else
      local why = refusal(u)
      if why then
        status[i] = why
        if not keep then offset_done(u, true) end
      elseif erased(u) then
        status[i] = 2
        if not keep then offset_done(u, false) end
      else
        G = {}
        if u.item then
          catalogue(u.item, u.ts)
        else
          if u.login then login(u) end
          apply(u)
          if u.cp then campaigns(u) end
        end
        local rec = {f = u.f, o = u.o, g = G}
        if keep then
          rec = cjson.encode(rec)
          redis.call('SET', KEYS[u.seen], rec, 'PX', ttl)
        elseif u.sd then
          remember(u)
        else
          redis.call('SET', KEYS[u.seen], '1', 'PX', ttl)
        end
        status[i] = 1
        recs[i] = rec
        if not keep then offset_done(u, false) end
      end
    end
  end
  if not keep then offsets_finish() end
  return status, recs
end
