-- Where to read a channel from for its newest COUNT messages up to a
-- position. ARGV: prefix, channel, its mark, last id (or '+'), count, age
-- cutoff, max messages per channel, tombstones kept, the epoch this node
-- serves. Returns the seq (0 in another history: the node is about to
-- learn of it).
if redis.call('HGET', META, 'epoch') ~= ARGV[9] then return 0 end
local channel, mark = ARGV[2], ARGV[3]
local count = tonumber(ARGV[5])
trim_channel(channel, tonumber(ARGV[7]), tonumber(ARGV[6]), tonumber(ARGV[8]))
if held(channel) == 0 then return remembered(channel, mark) end
local entries = redis.call('XREVRANGE', P .. ':ch:' .. channel, ARGV[4], '-', 'COUNT', count + 1)
if #entries == count + 1 then return num(seq_of(entries[#entries][1])) end
return redis.call('HGET', P .. ':cm:' .. channel, 'trimmed') or '0'
