-- What is held of a channel. ARGV: prefix, channel, age cutoff, max
-- messages per channel, tombstones kept. Returns {retained, last} or {}.
local channel = ARGV[2]
trim_channel(channel, tonumber(ARGV[4]), tonumber(ARGV[3]), tonumber(ARGV[5]))
local count = held(channel)
if count == 0 then return {} end
return {count, last_of(channel)}
