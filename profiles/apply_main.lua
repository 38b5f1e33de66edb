-- Runs the parts (ARGV[13]): 'one' both in one call (a single Redis node: the global part applies exactly the
-- plans the profile part applied); on a Redis Cluster 'profile' (one slot of profiles or items; returns the
-- statuses and the records), 'global' (the records, in the global slot; returns how many applied) and 'handoff'
-- (a login's first step, in the visitor's slot).

if mode == 'one' then
  local status, recs = run_profiles(cjson.decode(ARGV[1]), false)
  local applied = 0
  for i = 1, #status do
    if status[i] == 1 then
      global_record(recs[i])
      applied = applied + 1
    end
  end
  global_finish(applied)
  return status
elseif mode == 'profile' then
  local status, recs = run_profiles(cjson.decode(ARGV[1]), true)
  local out = {}
  for i = 1, #status do out[i] = recs[i] or '' end
  return {status, out}
elseif mode == 'global' then
  local n = run_globals(cjson.decode(ARGV[1]))
  global_finish(n)
  return n
elseif mode == 'handoff' then
  local out = {}
  for i, e in ipairs(cjson.decode(ARGV[1])) do out[i] = handoff(e) end
  return out
end
return redis.error_reply('unknown mode ' .. tostring(mode))
