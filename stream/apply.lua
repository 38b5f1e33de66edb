-- Apply a batch of update plans (see stream/updates.py) to the profiles, atomically per batch.
-- Each plan is applied at most once: its event id is remembered (SET NX with a TTL) in the same atomic step,
-- so a batch redelivered after a crash changes nothing twice.
--
-- ARGV: 1 plans (JSON array), 2 key prefix, 3 de-duplication TTL (ms), 4 recent items kept,
--       5 affinity half-life (ms), 6 trending half-life (ms), 7 half-lives per trending era,
--       8 interactions log max length
-- Returns one status per plan: 1 applied, 0 duplicate (already applied).

local plans = cjson.decode(ARGV[1])
local P = ARGV[2]
local ttl = ARGV[3]
local recent_max = tonumber(ARGV[4])
local aff_h = tonumber(ARGV[5])
local tr_h = tonumber(ARGV[6])
local era_n = tonumber(ARGV[7])
local maxlen = ARGV[8]
local era_ms = tr_h * era_n
local logged = 0  -- interactions written to the training log by this call

local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function pkey(pid, suffix)
  if suffix then return P .. ':p:' .. pid .. ':' .. suffix end
  return P .. ':p:' .. pid
end
local SUFFIXES = {'recent', 'cart', 'aff', 'items', 'items_ts', 'bought', 'sess'}

local function hmin(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v < cur then redis.call('HSET', key, field, int(v)) end
end
local function hmax(key, field, v)
  local cur = tonumber(redis.call('HGET', key, field))
  if (not cur) or v > cur then redis.call('HSET', key, field, int(v)) end
end

local function resolve(pid)
  if string.sub(pid, 1, 2) == 'a:' then
    local c = redis.call('GET', P .. ':alias:' .. string.sub(pid, 3))
    if c then return 'c:' .. c end
  end
  return pid
end

-- Merge the profile of an anonymous visitor into a customer's (login), then delete it.
local function merge(src, dst)
  local sh, dh = pkey(src), pkey(dst)
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
    local a = redis.call('HGETALL', pkey(src, 'aff'))
    for i = 1, #a, 2 do redis.call('HINCRBYFLOAT', pkey(dst, 'aff'), a[i], num(tonumber(a[i + 1]) * factor)) end
  end
  local items = redis.call('HGETALL', pkey(src, 'items'))
  for i = 1, #items, 2 do redis.call('HINCRBYFLOAT', pkey(dst, 'items'), items[i], items[i + 1]) end
  for _, s in ipairs({'items_ts', 'bought'}) do
    local h = redis.call('HGETALL', pkey(src, s))
    for i = 1, #h, 2 do hmax(pkey(dst, s), h[i], tonumber(h[i + 1])) end
  end
  local cart = redis.call('HGETALL', pkey(src, 'cart'))
  for i = 1, #cart, 2 do redis.call('HINCRBY', pkey(dst, 'cart'), cart[i], cart[i + 1]) end
  local recent = redis.call('ZRANGE', pkey(src, 'recent'), 0, -1, 'WITHSCORES')
  for i = 1, #recent, 2 do redis.call('ZADD', pkey(dst, 'recent'), 'GT', recent[i + 1], recent[i]) end
  redis.call('ZREMRANGEBYRANK', pkey(dst, 'recent'), 0, -(recent_max + 1))
  if redis.call('EXISTS', pkey(src, 'sess')) == 1 then
    redis.call('PFMERGE', pkey(dst, 'sess'), pkey(dst, 'sess'), pkey(src, 'sess'))
  end
  redis.call('HINCRBY', dh, 'merged_visitors', 1)
  redis.call('DEL', sh)
  for _, s in ipairs(SUFFIXES) do redis.call('DEL', pkey(src, s)) end
  redis.call('ZREM', P .. ':profiles', src)
  local last = redis.call('HGET', dh, 'last_seen')
  if last then redis.call('ZADD', P .. ':profiles', 'GT', last, dst) end
end

local touched_eras = {}
local function add_trending(item, w, ts)
  local era = math.floor(ts / era_ms)
  for e = era, era + 1 do
    local key = P .. ':trending:' .. int(e)
    redis.call('ZINCRBY', key, num(w * math.pow(2, (ts - e * era_ms) / tr_h)), item)
    touched_eras[key] = true
  end
  redis.call('ZINCRBY', P .. ':popular', num(w), item)
end

local function add_affinity(h, pid, cat, w, ts)
  local L = tonumber(redis.call('HGET', h, 'aff_L'))
  if not L then
    L = ts
    redis.call('HSET', h, 'aff_L', int(ts))
  end
  redis.call('HINCRBYFLOAT', pkey(pid, 'aff'), cat, num(w * math.pow(2, (ts - L) / aff_h)))
end

local function apply(pid, u)
  local h = pkey(pid)
  local ts = u.ts
  redis.call('HINCRBY', h, 'n:' .. u.t, 1)
  local seen = redis.call('HMGET', h, 'first_seen', 'last_seen')
  local first, last = tonumber(seen[1]), tonumber(seen[2])
  if (not first) or ts < first then redis.call('HSET', h, 'first_seen', int(ts)) end
  if (not last) or ts > last then redis.call('HSET', h, 'last_seen', int(ts)) end
  redis.call('ZADD', P .. ':profiles', 'GT', int(ts), pid)
  if u.s then redis.call('PFADD', pkey(pid, 'sess'), u.s) end
  if u.items then
    for _, it in ipairs(u.items) do
      local item, cat, w = it[1], it[2], it[3]
      redis.call('ZADD', pkey(pid, 'recent'), 'GT', int(ts), item)
      hmax(pkey(pid, 'items_ts'), item, ts)
      if w ~= 0 then
        redis.call('HINCRBYFLOAT', pkey(pid, 'items'), item, num(w))
        redis.call('XADD', P .. ':interactions', 'MAXLEN', '~', maxlen, '*',
          'd', pid .. '\t' .. item .. '\t' .. num(w) .. '\t' .. int(ts))
        logged = logged + 1
      end
      if w > 0 then
        if cat == '' then cat = redis.call('HGET', P .. ':item:' .. item, 'category') or '' end
        if cat ~= '' then add_affinity(h, pid, cat, w, ts) end
        add_trending(item, w, ts)
      end
      if u.order then hmax(pkey(pid, 'bought'), item, ts) end
    end
    redis.call('ZREMRANGEBYRANK', pkey(pid, 'recent'), 0, -(recent_max + 1))
  end
  if u.cart then
    for _, c in ipairs(u.cart) do
      local item, d = c[1], c[2]
      if d == 0 then
        redis.call('HDEL', pkey(pid, 'cart'), item)
      elseif redis.call('HINCRBY', pkey(pid, 'cart'), item, d) <= 0 then
        redis.call('HDEL', pkey(pid, 'cart'), item)
      end
    end
  end
  if u.order then
    redis.call('HINCRBY', h, 'orders', 1)
    redis.call('HINCRBYFLOAT', h, 'revenue', num(u.order))
    hmin(h, 'first_purchase', ts)
    hmax(h, 'last_purchase', ts)
  end
end

local function catalogue(it, ts)
  local k = P .. ':item:' .. it.id
  local cur = tonumber(redis.call('HGET', k, 'updated'))
  if cur and ts < cur then return end
  local old_cat = redis.call('HGET', k, 'category')
  redis.call('HSET', k, 'title', it.title, 'category', it.category, 'price', num(it.price),
    'in_stock', int(it.in_stock), 'updated', int(ts))
  redis.call('SADD', P .. ':catalogue', it.id)
  if it.in_stock == 1 then
    redis.call('SREM', P .. ':out_of_stock', it.id)
  else
    redis.call('SADD', P .. ':out_of_stock', it.id)
  end
  if old_cat and old_cat ~= it.category then redis.call('SREM', P .. ':category:' .. old_cat, it.id) end
  redis.call('SADD', P .. ':category:' .. it.category, it.id)
end

local status = {}
local applied = 0
for i, u in ipairs(plans) do
  if redis.call('SET', P .. ':seen:' .. u.id, '1', 'NX', 'PX', ttl) then
    status[i] = 1
    applied = applied + 1
    if u.item then
      catalogue(u.item, u.ts)
    else
      if u.login then
        if redis.call('SET', P .. ':alias:' .. u.login, string.sub(u.p, 3), 'NX') then
          merge('a:' .. u.login, u.p)
        end
      end
      apply(resolve(u.p), u)
    end
  else
    status[i] = 0
  end
end
for key, _ in pairs(touched_eras) do redis.call('PEXPIRE', key, int(era_ms * 3)) end
if applied > 0 then redis.call('INCRBY', P .. ':stats:applied', applied) end
if logged > 0 then redis.call('INCRBY', P .. ':stats:interactions', logged) end
return status
