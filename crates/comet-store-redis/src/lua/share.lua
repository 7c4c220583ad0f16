-- This node's subscribers per channel, and what the other live nodes
-- have. ARGV: prefix, node id, then channel, count for every channel this
-- node has subscribers on. Keys: P:subs:NAME (node -> count), P:subscribed
-- (channels someone has subscribers on), P:node:ID (the channels a node
-- counted), P:nodes (node -> its last share, ms of Redis's clock). A node
-- is live for 3 s after its last share; after 60 s its counts are removed.
-- Returns channel, count for every channel other live nodes have
-- subscribers on.
local node = ARGV[2]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local LIVE_MS, FORGET_MS = 3000, 60000

local function withdraw(who, channel)
  local subs = P .. ':subs:' .. channel
  redis.call('HDEL', subs, who)
  if redis.call('HLEN', subs) == 0 then
    redis.call('SREM', P .. ':subscribed', channel)
  end
end

local mine = P .. ':node:' .. node
local current = {}
for i = 3, #ARGV, 2 do
  local channel = ARGV[i]
  current[channel] = true
  redis.call('HSET', P .. ':subs:' .. channel, node, ARGV[i + 1])
  redis.call('SADD', P .. ':subscribed', channel)
  redis.call('SADD', mine, channel)
end
for _, channel in ipairs(redis.call('SMEMBERS', mine)) do
  if not current[channel] then
    withdraw(node, channel)
    redis.call('SREM', mine, channel)
  end
end
redis.call('ZADD', P .. ':nodes', now, node)

for _, gone in ipairs(redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', '(' .. num(now - FORGET_MS))) do
  local theirs = P .. ':node:' .. gone
  for _, channel in ipairs(redis.call('SMEMBERS', theirs)) do withdraw(gone, channel) end
  redis.call('DEL', theirs)
  redis.call('ZREM', P .. ':nodes', gone)
end

local live = {}
for _, other in ipairs(redis.call('ZRANGEBYSCORE', P .. ':nodes', num(now - LIVE_MS), '+inf')) do
  if other ~= node then live[other] = true end
end
local result = {}
for _, channel in ipairs(redis.call('SMEMBERS', P .. ':subscribed')) do
  local fields = redis.call('HGETALL', P .. ':subs:' .. channel)
  local total = 0
  for i = 1, #fields, 2 do
    if live[fields[i]] then total = total + tonumber(fields[i + 1]) end
  end
  if total > 0 then
    result[#result + 1] = channel
    result[#result + 1] = total
  end
end
return result
