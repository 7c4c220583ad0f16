-- Messages of a channel after a position. ARGV: prefix, channel, its mark,
-- first id, last id (or '+'), most messages, most bytes, age cutoff (ms, 0:
-- none), max messages per channel, tombstones kept, the epoch this node
-- serves.
-- Returns {trimmed, truncated (0/1), then seq, event, data, time per message};
-- nothing from another history (the node is about to learn of it).
if redis.call('HGET', META, 'epoch') ~= ARGV[11] then return {0, 0} end
local channel, mark = ARGV[2], ARGV[3]
local first, last = ARGV[4], ARGV[5]
local max_count, max_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
trim_channel(channel, tonumber(ARGV[9]), tonumber(ARGV[8]), tonumber(ARGV[10]))
if held(channel) == 0 then return {remembered(channel, mark), 0} end
local result = {redis.call('HGET', P .. ':cm:' .. channel, 'trimmed') or '0', 0}
local entries = redis.call('XRANGE', P .. ':ch:' .. channel, first, last, 'COUNT', max_count + 1)
local count, total = 0, 0
for _, entry in ipairs(entries) do
  local time, size, event = header(entry[2])
  total = total + size
  if count >= max_count or (count > 0 and total > max_bytes) then
    result[2] = 1
    break
  end
  count = count + 1
  result[#result + 1] = num(seq_of(entry[1]))
  result[#result + 1] = event
  result[#result + 1] = entry[2][4]
  result[#result + 1] = num(time)
end
return result
