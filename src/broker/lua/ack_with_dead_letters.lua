-- Appends dead letters to the dead-letter stream, then acknowledges, atomically.
-- KEYS[1] stream, KEYS[2] dead-letter stream; ARGV[1] group, ARGV[2] number of dead letters,
-- then per dead letter: its item count and its field/value items; then the ids to acknowledge.
--
-- A script rather than MULTI/EXEC: Redis does not roll back a transaction whose command fails
-- at run time (an XADD meeting WRONGTYPE), so MULTI would still run the XACK and lose the entry.
-- A script stops at the first failed call, before any XACK.
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local acked = 0
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
  i = last + 1
end
return acked
