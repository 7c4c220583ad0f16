-- A page of the channels held, in name order. ARGV: prefix, the name to
-- start after ('' from the first), page size, max messages per channel.
-- Returns name, retained, last for each (retained within the limit: a
-- channel may hold a few more until its next trim, see append.lua).
local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
local names = redis.call('ZRANGEBYLEX', P .. ':names', start, '+', 'LIMIT', 0, tonumber(ARGV[3]))
local result = {}
for _, name in ipairs(names) do
  result[#result + 1] = name
  result[#result + 1] = math.min(held(name), tonumber(ARGV[4]))
  result[#result + 1] = last_of(name)
end
return result
