-- Steps over at most ARGV[4] entries of a stream in one direction and returns only how many
-- and the last one's id, so that counting entries (or finding the N-th newest) never carries
-- their fields to the client, however large they are.
-- XRANGE inside a script still copies each entry's fields into Lua (~9 ms per 1 MB entry), so
-- a call is bounded by bytes as well as by entries: it returns once the fields it has copied
-- pass BUDGET bytes, and sizes each page by the average entry seen so far (the first page is
-- one entry). One call thus holds Redis for tens of milliseconds, whether the entries are
-- 300 B or 1 MB, and the script's own memory stays bounded.
-- KEYS[1] stream; ARGV[1] `fwd` (XRANGE) or `rev` (XREVRANGE); ARGV[2] start and ARGV[3] end
-- as XRANGE / XREVRANGE take them (`-`, `+`, an id, `(id` exclusive); ARGV[4] most entries.
-- Returns {entries stepped over, last id or '', 1 if the range has no entry after the last
-- one else 0}.
local BUDGET = 4 * 1024 * 1024
local PAGE = 100
local cmd = ARGV[1] == 'rev' and 'XREVRANGE' or 'XRANGE'
local from, to, most = ARGV[2], ARGV[3], tonumber(ARGV[4])
local n, last, bytes, want = 0, '', 0, 1
while n < most and bytes < BUDGET do
  want = math.min(want, most - n)
  local page = redis.call(cmd, KEYS[1], from, to, 'COUNT', want)
  for _, entry in ipairs(page) do
    for _, v in ipairs(entry[2]) do bytes = bytes + #v end
  end
  n = n + #page
  if #page > 0 then last = page[#page][1] end
  if #page < want then return {n, last, 1} end
  from = '(' .. last
  -- As many entries as the bytes left hold at the average size so far, 1 to PAGE.
  local average = math.max(bytes / n, 1)
  want = math.max(1, math.min(PAGE, math.floor((BUDGET - bytes) / average)))
end
return {n, last, 0}
