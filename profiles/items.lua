-- The format of an entry of a profile's `items` hash, shared by the apply script (apply.lua) and ecrm migrate-keys
-- (profiles/migrate.py): "<weight> <last time (ms)>[ <last purchase time (ms)>]". A purchase is an interaction, so
-- the last time is never before the purchase time.

-- An entry: weight, time, purchase time or nil (an older engine's plain weight has time 0 until ecrm migrate-keys).
local function item_parse(v)
  local w, t, p = string.match(v, '^(%S+) (%S+) (%S+)$')
  if w then return tonumber(w), tonumber(t), tonumber(p) end
  w, t = string.match(v, '^(%S+) (%S+)$')
  if w then return tonumber(w), tonumber(t), nil end
  return tonumber(v), 0, nil
end

-- The entry of weight w, last time t and purchase time p (or nil).
local function item_value(w, t, p)
  if p and p > t then t = p end
  local v = string.format('%.17g', w) .. ' ' .. string.format('%d', t)
  if p then v = v .. ' ' .. string.format('%d', p) end
  return v
end
