-- The global part of applying update plans (after apply.lua): the operations a plan records for keys across
-- profiles (trending, popular, the training log, the profile count, counters, campaign counters, catalogue sets),
-- all in the global slot. An older engine's record (a Redis Cluster's marker) may hold the operations of key layout
-- 4's profiles index ('z', 'r'): they do nothing now. Keys by name through the map GK (ARGV[14]): profile_count,
-- popular, interactions, applied,
-- logged, catalogue, out_of_stock, offsets, 'tr:<era>', 'cat:<category>', 'camp:<campaign>', 'shared' (this period's
-- bounds of browsers' events).

local logged = 0  -- interactions written to the training log by this call
local popular_touched = false
local touched_eras = {}
local shared_touched = false
local catalogue_size = nil

-- May the item enter popular and trending? Once the catalogue has items, only catalogue items do (ARGV[21]).
local function listed(item)
  if not catalogue_only then return true end
  if catalogue_size == nil then catalogue_size = redis.call('SCARD', KEYS[GK.catalogue]) end
  return catalogue_size == 0 or redis.call('SISMEMBER', KEYS[GK.catalogue], item) == 1
end

-- How much of weight w a browser's event may still add for `who` ('v|<profile>' or 'c|<client>') and the item in
-- this period: up to the highest weight of its events for the item (a view, then a cart add, then a purchase of
-- one item count like the purchase alone), for at most cap distinct items. Returns the allowance and whether the
-- item would be new for `who`.
local function allowance(who, item, w, cap)
  local sk = KEYS[GK.shared]
  local cur = tonumber(redis.call('HGET', sk, who .. '|' .. item))
  if cur then return math.max(0, w - cur), false end
  if (tonumber(redis.call('HGET', sk, who)) or 0) >= cap then return 0, false end
  return w, true
end

local function counted(who, item, inc, new)
  local sk = KEYS[GK.shared]
  redis.call('HINCRBYFLOAT', sk, who .. '|' .. item, num(inc))
  if new then redis.call('HINCRBY', sk, who, 1) end
end

local function log_interaction(pid, item, w, ts)
  redis.call('XADD', KEYS[GK.interactions], 'MAXLEN', '~', maxlen, '*', 'p', pid, 'i', item, 'w', w, 't', ts)
  logged = logged + 1
end

local function add_popularity(item, t1, t2, inc1, inc2, w)
  redis.call('ZINCRBY', KEYS[t1], inc1, item)
  redis.call('ZINCRBY', KEYS[t2], inc2, item)
  touched_eras[t1] = true
  touched_eras[t2] = true
  redis.call('ZINCRBY', KEYS[GK.popular], w, item)
  popular_touched = true
end

-- A browser's interaction (op 'b', apply.lua): counted within its visitor's and its client's bounds; an item not
-- in the catalogue (once there is one) does not count at all.
local function bounded_op(op)
  local pid, client, item, w = op[2], op[3], op[4], tonumber(op[5])
  if not listed(item) then return end
  local v = 'v|' .. pid
  local inc, newv = allowance(v, item, w, per_visitor)
  local c, newc = nil, false
  if client ~= '' and inc > 0 then
    c = 'c|' .. client
    local incc
    incc, newc = allowance(c, item, w, per_client)
    inc = math.min(inc, incc)
  end
  if inc <= 0 then return end
  counted(v, item, inc, newv)
  if c then counted(c, item, inc, newc) end
  shared_touched = true
  log_interaction(pid, item, num(inc), op[10])
  add_popularity(item, GK[op[6]], GK[op[7]], num(inc * tonumber(op[8])), num(inc * tonumber(op[9])), num(inc))
end

local function global_op(op)
  local kind = op[1]
  if kind == 'n' then
    redis.call('INCRBY', KEYS[GK.profile_count], op[2])
  elseif kind == 'x' then
    log_interaction(op[2], op[3], op[4], op[5])
  elseif kind == 't' then
    if listed(op[2]) then add_popularity(op[2], GK[op[3]], GK[op[4]], op[5], op[6], op[7]) end
  elseif kind == 'b' then
    bounded_op(op)
  elseif kind == 'c' then
    local sk = KEYS[GK['camp:' .. op[2]]]
    if op[5] == 1 then redis.call('HINCRBYFLOAT', sk, op[3], op[4]) else redis.call('HINCRBY', sk, op[3], op[4]) end
  elseif kind == 'k' then
    redis.call('SADD', KEYS[GK.catalogue], op[2])
    if op[3] == 1 then
      redis.call('SREM', KEYS[GK.out_of_stock], op[2])
    else
      redis.call('SADD', KEYS[GK.out_of_stock], op[2])
    end
    if op[4] ~= '' and op[4] ~= op[5] then redis.call('SREM', KEYS[GK['cat:' .. op[4]]], op[2]) end
    redis.call('SADD', KEYS[GK['cat:' .. op[5]]], op[2])
  end
end

local function global_record(rec)
  for _, op in ipairs(rec.g) do global_op(op) end
end

-- Redis Cluster: apply the records of a chunk (plan order) once per delivery. A record of a Kafka message applies
-- when its offset is above the highest applied offset of its partition (kept in the global slot), so a record
-- given again after a crash (its profile part ran, this part perhaps not) is applied exactly once.
-- Returns the number of records applied.
local function run_globals(recs)
  local high, changed = {}, {}
  local n = 0
  for _, rec in ipairs(recs) do
    local go = true
    if rec.f then
      local cur = high[rec.f]
      if cur == nil then cur = tonumber(redis.call('HGET', KEYS[GK.offsets], rec.f)) or -1 end
      go = rec.o > cur
      if go then cur = rec.o end
      high[rec.f] = cur
      changed[rec.f] = changed[rec.f] or go
    end
    if go then
      global_record(rec)
      n = n + 1
    end
  end
  for f, yes in pairs(changed) do
    if yes then redis.call('HSET', KEYS[GK.offsets], f, string.format('%d', high[f])) end
  end
  return n
end

-- After the records: expiries of the trending eras, the bound of the popular ranking, the counters.
local function global_finish(applied)
  for key, _ in pairs(touched_eras) do
    redis.call('PEXPIRE', KEYS[key], string.format('%d', era_ms * 3))
    if redis.call('ZCARD', KEYS[key]) > trending_max * 1.1 then
      redis.call('ZREMRANGEBYRANK', KEYS[key], 0, -(trending_max + 1))
    end
  end
  if shared_touched then redis.call('PEXPIRE', KEYS[GK.shared], string.format('%d', shared_ms * 2)) end
  if popular_touched and redis.call('ZCARD', KEYS[GK.popular]) > popular_max * 1.1 then
    redis.call('ZREMRANGEBYRANK', KEYS[GK.popular], 0, -(popular_max + 1))
  end
  if applied > 0 then redis.call('INCRBY', KEYS[GK.applied], applied) end
  if logged > 0 then redis.call('INCRBY', KEYS[GK.logged], logged) end
end
