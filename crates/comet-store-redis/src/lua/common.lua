-- What every script shares. Keys: P is the prefix (with its hash tag, so
-- every key lives in one slot); P:meta (epoch, seq, messages, bytes,
-- channels, forgotten), P:ch:NAME (a channel's messages, a stream with ids
-- SEQ-0 and fields e, d, t, s), P:cm:NAME (the channel: last, trimmed, n,
-- b, m), P:names (channels holding messages, by name), P:order (every
-- retained message by seq, when retention by age or total bytes needs
-- the store-wide order), P:forgotten (tombstones by last seq), P:marks
-- (folded marks), P:log (every message in order, for the nodes' feeds),
-- P:k:HASH and P:korder (idempotency keys).
local P = ARGV[1]
local META = P .. ':meta'

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function num(x)
  return string.format('%d', x)
end

-- Lets go of the oldest tombstones beyond KEEP, folding each into its mark.
local function evict_tombstones(keep)
  local forgotten = tonumber(redis.call('HGET', META, 'forgotten') or '0')
  if forgotten <= keep then return end
  local gone = redis.call('ZPOPMIN', P .. ':forgotten', forgotten - keep)
  for i = 1, #gone, 2 do
    local cm = P .. ':cm:' .. gone[i]
    local mark = redis.call('HGET', cm, 'm')
    local last = tonumber(redis.call('HGET', cm, 'last') or '0')
    if mark then
      local held = tonumber(redis.call('HGET', P .. ':marks', mark) or '0')
      if last > held then redis.call('HSET', P .. ':marks', mark, num(last)) end
    end
    redis.call('DEL', cm)
    redis.call('HINCRBY', META, 'forgotten', -1)
  end
end

-- A channel with nothing retained: its stream goes, a tombstone stays.
local function forget(channel, keep)
  local cm = P .. ':cm:' .. channel
  redis.call('DEL', P .. ':ch:' .. channel)
  redis.call('ZREM', P .. ':names', channel)
  redis.call('HINCRBY', META, 'channels', -1)
  redis.call('ZADD', P .. ':forgotten', redis.call('HGET', cm, 'last'), channel)
  redis.call('HINCRBY', META, 'forgotten', 1)
  evict_tombstones(keep)
end

-- Removes the COUNT oldest messages of CHANNEL (fewer if it holds fewer);
-- false when it holds none.
local function drop_oldest(channel, keep, count)
  count = count or 1
  local stream = P .. ':ch:' .. channel
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', count)
  if #oldest == 0 then return false end
  local ids, members, size, seq = {}, {}, 0, 0
  for i, entry in ipairs(oldest) do
    ids[i] = entry[1]
    seq = seq_of(entry[1])
    members[i] = num(seq) .. ':' .. channel
    size = size + tonumber(field(entry[2], 's'))
  end
  redis.call('XDEL', stream, unpack(ids))
  redis.call('ZREM', P .. ':order', unpack(members))
  local cm = P .. ':cm:' .. channel
  local left = tonumber(redis.call('HGET', cm, 'n')) - #oldest
  redis.call('HSET', cm, 'trimmed', num(seq), 'n', left)
  redis.call('HINCRBY', META, 'messages', -#oldest)
  redis.call('HINCRBY', META, 'bytes', -size)
  if left <= 0 then forget(channel, keep) end
  return true
end

-- The time the oldest message of CHANNEL was published, or nil.
local function oldest_time(channel)
  local first = redis.call('XRANGE', P .. ':ch:' .. channel, '-', '+', 'COUNT', 1)[1]
  if not first then return nil end
  return tonumber(field(first[2], 't'))
end

-- Keeps at most MAX messages of CHANNEL, none published before CUTOFF
-- (0: no age limit).
local function trim_channel(channel, max, cutoff, keep)
  local n = tonumber(redis.call('HGET', P .. ':cm:' .. channel, 'n') or '0')
  if n > max then
    drop_oldest(channel, keep, n - max)
  end
  if cutoff <= 0 then return end
  while true do
    local t = oldest_time(channel)
    if t == nil or t >= cutoff then return end
    if not drop_oldest(channel, keep) then return end
  end
end

-- What a channel that holds nothing remembers: its tombstone's last seq,
-- or its folded mark.
local function remembered(channel, mark)
  local cm = P .. ':cm:' .. channel
  local last = redis.call('HGET', cm, 'last')
  if last then return last end
  return redis.call('HGET', P .. ':marks', mark) or '0'
end

-- Lets go of idempotency keys older than CUTOFF and beyond MAX.
local function forget_keys(cutoff, max)
  local korder = P .. ':korder'
  local expired = redis.call('ZRANGEBYSCORE', korder, '-inf', '(' .. num(cutoff), 'LIMIT', 0, 1024)
  for _, h in ipairs(expired) do redis.call('DEL', P .. ':k:' .. h) end
  if #expired > 0 then redis.call('ZREM', korder, unpack(expired)) end
  local count = redis.call('ZCARD', korder)
  if count > max then
    local gone = redis.call('ZPOPMIN', korder, count - max)
    for i = 1, #gone, 2 do redis.call('DEL', P .. ':k:' .. gone[i]) end
    count = max
  end
  redis.call('HSET', META, 'keys', count)
end

local function counters()
  local c = redis.call('HMGET', META, 'channels', 'forgotten', 'messages', 'bytes', 'keys')
  return {c[1] or '0', c[2] or '0', c[3] or '0', c[4] or '0', c[5] or '0'}
end
