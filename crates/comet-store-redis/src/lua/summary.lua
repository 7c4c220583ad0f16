-- What is held of a channel. ARGV: prefix, channel, age cutoff, max
-- messages per channel, tombstones kept. Returns {retained, last} or {}.
local channel = ARGV[2]
trim_channel(channel, tonumber(ARGV[4]), tonumber(ARGV[3]), tonumber(ARGV[5]))
local held = redis.call('HMGET', P .. ':cm:' .. channel, 'n', 'last')
if tonumber(held[1] or '0') <= 0 then return {} end
return {held[1], held[2]}
