-- Steps over at most ARGV[4] entries of a stream in one direction and returns only how many
-- and the last one's id, so that counting entries (or finding the N-th newest) never carries
-- their fields to the client, however large they are. Pages of 100 keep the script's own
-- memory bounded.
-- KEYS[1] stream; ARGV[1] `fwd` (XRANGE) or `rev` (XREVRANGE); ARGV[2] start and ARGV[3] end
-- as XRANGE / XREVRANGE take them (`-`, `+`, an id, `(id` exclusive); ARGV[4] most entries.
-- Returns {entries stepped over, last id or ''}.
local cmd = ARGV[1] == 'rev' and 'XREVRANGE' or 'XRANGE'
local from, to, most = ARGV[2], ARGV[3], tonumber(ARGV[4])
local n, last = 0, ''
while n < most do
  local want = math.min(100, most - n)
  local page = redis.call(cmd, KEYS[1], from, to, 'COUNT', want)
  if #page == 0 then break end
  n = n + #page
  last = page[#page][1]
  if #page < want then break end
  from = '(' .. last
end
return {n, last}
