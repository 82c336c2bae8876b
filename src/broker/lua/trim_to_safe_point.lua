-- Trims a stream to a target MINID, but never past the oldest entry any group of the stream
-- still needs: for each group (XINFO GROUPS: every group, not only ours), its oldest pending
-- entry, and the entry right after its last-delivered id. One script, so no group can read,
-- claim or acknowledge between the reading of that safe point and the trimming.
-- Entry ids are compared as two decimal strings, never as Lua numbers (doubles would lose the
-- sequence part above 2^53).
-- KEYS[1] stream; ARGV[1] target id (<ms>-<seq>, no leading zeros); ARGV[2] mode: `exact`,
-- `approx` (XTRIM ~ with LIMIT ARGV[3]) or `plan` (read the safe point, trim nothing);
-- ARGV[4] a group that must exist on the stream, or '' (the worker's own group: without it,
-- nothing records what the reader still has to read, so nothing is trimmed).
-- Returns {MINID used, entries removed, the group holding entries older than the target
-- back or '', 'pending'|'undelivered'|'', safe point or '', 0 if ARGV[4]'s group is missing
-- (nothing done) else 1}.
local MAX = '18446744073709551615'

local function parts(id)
  return string.match(id, '^(%d+)%-(%d+)$')
end

-- -1, 0 or 1 for two decimal strings without leading zeros.
local function cmp_num(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function cmp(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  local c = cmp_num(am, bm)
  if c ~= 0 then return c end
  return cmp_num(as, bs)
end

-- A decimal string plus one.
local function incr(n)
  local i = #n
  while i > 0 and string.sub(n, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #n) end
  return string.sub(n, 1, i - 1) .. string.char(string.byte(n, i) + 1) .. string.rep('0', #n - i)
end

-- The id right after `id`; nil after the last possible id.
local function next_id(id)
  local ms, seq = parts(id)
  if seq ~= MAX then return ms .. '-' .. incr(seq) end
  if ms == MAX then return nil end
  return incr(ms) .. '-0'
end

local target, mode, required = ARGV[1], ARGV[2], ARGV[4]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {target, 0, '', '', '', required == '' and 1 or 0}
end

local safe, holder, why = nil, '', ''
local function consider(id, group, reason)
  if safe == nil or cmp(id, safe) < 0 then
    safe, holder, why = id, group, reason
  end
end
local found = required == ''
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == required then found = true end
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] then consider(summary[2], info['name'], 'pending') end
  end
  local after = next_id(info['last-delivered-id'])
  if after then consider(after, info['name'], 'undelivered') end
end
if not found then
  return {target, 0, '', '', '', 0}
end

local minid = target
if safe ~= nil and cmp(safe, target) < 0 then
  minid = safe
  -- Held back only if an entry older than the target is kept for it (a group that has read
  -- the whole stream has its safe point after the last entry, and holds nothing).
  local first = redis.call('XRANGE', KEYS[1], minid, '+', 'COUNT', 1)[1]
  if first == nil or cmp(first[1], target) >= 0 then holder, why = '', '' end
else
  holder, why = '', ''
end
local removed = 0
if mode == 'exact' then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
elseif mode == 'approx' then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', '~', minid, 'LIMIT', ARGV[3])
end
return {minid, removed, holder, why, safe or '', 1}
