-- One step of retention: messages published before the cutoff (0: none),
-- oldest of the store first, at most STEP, and keys beyond their window or
-- bound. ARGV: prefix, cutoff, step, tombstones kept, now, key window, max
-- keys. Returns {more (0/1), counters...}.
local cutoff, step, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
forget_keys(tonumber(ARGV[5]) - tonumber(ARGV[6]), tonumber(ARGV[7]))
local more = 0
if cutoff > 0 then
  local removed = 0
  while true do
    local channel = redis.call('ZRANGE', P .. ':first', 0, 0)[1]
    if not channel then break end
    local t = oldest_time(channel)
    if t == nil then
      redis.call('ZREM', P .. ':first', channel)
    elseif t >= cutoff then
      break
    else
      drop_oldest(channel, keep)
      removed = removed + 1
      if removed >= step then
        more = 1
        break
      end
    end
  end
end
local result = {more}
for _, c in ipairs(counters()) do result[#result + 1] = c end
return result
