-- Puts one dead letter back on its stream and deletes it from the dead-letter stream, atomically.
-- KEYS[1] dead-letter stream, KEYS[2] original stream; ARGV[1] the dead letter's id,
-- ARGV[2] the most field/value items this script may unpack into one XADD.
-- Returns {'replayed', new id}, {'gone'}, {'not a dead letter'} or {'too large', items}.
--
-- One script, so a crash (of the caller or of Redis with AOF) leaves the entry in exactly one
-- of the two streams. Nothing is written unless the XADD can be built; the XDEL runs only after
-- the XADD succeeded (a script stops at the first failed call).
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return {'gone'}
end
local items = found[1][2]
-- ack.rs appends these eight pairs after the original fields: strip exactly those, from the end,
-- so an original field that merely starts with dlq_ stays.
local known = {
  dlq_reason = true, dlq_error = true, dlq_stream = true, dlq_original_id = true,
  dlq_group = true, dlq_consumer = true, dlq_deliveries = true, dlq_failed_at = true,
}
local kept = #items
for _ = 1, 8 do
  local name = items[kept - 1]
  if kept < 4 or not known[name] then
    return {'not a dead letter'}
  end
  known[name] = nil
  kept = kept - 2
end
if kept > tonumber(ARGV[2]) then
  return {'too large', kept}
end
local id = redis.call('XADD', KEYS[2], '*', unpack(items, 1, kept))
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', id}
