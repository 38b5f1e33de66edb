-- The global part of applying update plans (after apply.lua): the operations a plan records for keys across
-- profiles (trending, popular, the training log, the profiles index, counters, campaign counters, catalogue sets),
-- all in the global slot. Keys by name through the map GK (ARGV[14]): profiles, popular, interactions, applied,
-- logged, catalogue, out_of_stock, offsets, 'tr:<era>', 'cat:<category>', 'camp:<campaign>'.

local logged = 0  -- interactions written to the training log by this call
local popular_touched = false
local touched_eras = {}

local function global_op(op)
  local kind = op[1]
  if kind == 'z' then
    redis.call('ZADD', KEYS[GK.profiles], 'GT', op[3], op[2])
  elseif kind == 'r' then
    redis.call('ZREM', KEYS[GK.profiles], op[2])
  elseif kind == 'x' then
    redis.call('XADD', KEYS[GK.interactions], 'MAXLEN', '~', maxlen, '*', 'p', op[2], 'i', op[3], 'w', op[4],
      't', op[5])
    logged = logged + 1
  elseif kind == 't' then
    local t1, t2 = GK[op[3]], GK[op[4]]
    redis.call('ZINCRBY', KEYS[t1], op[5], op[2])
    redis.call('ZINCRBY', KEYS[t2], op[6], op[2])
    touched_eras[t1] = true
    touched_eras[t2] = true
    redis.call('ZINCRBY', KEYS[GK.popular], op[7], op[2])
    popular_touched = true
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
  for key, _ in pairs(touched_eras) do redis.call('PEXPIRE', KEYS[key], string.format('%d', era_ms * 3)) end
  if popular_touched and redis.call('ZCARD', KEYS[GK.popular]) > popular_max * 1.1 then
    redis.call('ZREMRANGEBYRANK', KEYS[GK.popular], 0, -(popular_max + 1))
  end
  if applied > 0 then redis.call('INCRBY', KEYS[GK.applied], applied) end
  if logged > 0 then redis.call('INCRBY', KEYS[GK.logged], logged) end
end
