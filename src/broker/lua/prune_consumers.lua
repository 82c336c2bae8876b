-- Deletes the group's consumers, other than the caller, idle longer than a limit with nothing
-- pending. One script, so no consumer can read between the check and the delete (DELCONSUMER
-- would drop what it read from the pending list).
-- KEYS[1] stream; ARGV[1] group, ARGV[2] the caller's consumer name, ARGV[3] idle limit (ms).
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0
     and tonumber(info['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
