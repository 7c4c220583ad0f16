-- What every script shares. Keys: P is the prefix (with its hash tag, so
-- every key lives in one slot); P:meta (epoch, seq, messages, bytes,
-- channels, forgotten, keys); P:ch:NAME (a channel's messages: a stream
-- with ids SEQ-0 and fields h, 'TIME SIZE EVENT', and d, the data; its
-- length and last id are the channel's count and last seq); P:cm:NAME
-- (what else a channel keeps: trimmed, its highest removed seq; m, its
-- folded mark; last, once it is a tombstone); P:names (channels holding
-- messages, by name); P:first (the same channels by the seq of their
-- oldest message: where retention by age or total bytes finds the
-- oldest message of the store); P:forgotten (tombstones by last seq);
-- P:marks (folded marks); P:log (every message in order, for the nodes'
-- feeds: fields h, 'TIME CHANNEL EVENT', and d); P:k:HASH and P:korder
-- (idempotency keys).
local P = ARGV[1]
local META = P .. ':meta'

-- A channel entry's time, stored size and event (from its h field): one
-- field rather than three, as each costs Redis time on every publish.
local function header(fields)
  local time, size, event = string.match(fields[2], '^(%d+) (%d+) (.*)$')
  return tonumber(time), tonumber(size), event
end

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function num(x)
  return string.format('%d', x)
end

-- How many messages CHANNEL holds.
local function held(channel)
  return redis.call('XLEN', P .. ':ch:' .. channel)
end

-- The seq of CHANNEL's newest message (0 when it holds none).
local function last_of(channel)
  local newest = redis.call('XREVRANGE', P .. ':ch:' .. channel, '+', '-', 'COUNT', 1)[1]
  if not newest then return 0 end
  return seq_of(newest[1])
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

-- A channel with nothing retained, whose newest message was LAST: its
-- stream is gone, a tombstone stays.
local function forget(channel, keep, last)
  local cm = P .. ':cm:' .. channel
  redis.call('DEL', P .. ':ch:' .. channel)
  redis.call('HSET', cm, 'last', num(last))
  redis.call('ZREM', P .. ':names', channel)
  redis.call('ZREM', P .. ':first', channel)
  redis.call('HINCRBY', META, 'channels', -1)
  redis.call('ZADD', P .. ':forgotten', last, channel)
  redis.call('HINCRBY', META, 'forgotten', 1)
  evict_tombstones(keep)
end

-- Most messages removed by one command (Lua's unpack has a bound).
local REMOVE_STEP = 1000

-- Removes up to COUNT (at most REMOVE_STEP) of CHANNEL's oldest messages
-- and moves the channel in P:first to its new oldest. Leaves the
-- channel's hash and the store's counts to the caller. Returns how many
-- it removed, their bytes and the highest seq removed.
local function remove_oldest(channel, count)
  count = math.min(count, REMOVE_STEP)
  local stream = P .. ':ch:' .. channel
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', count + 1)
  local removed = math.min(count, #oldest)
  if removed == 0 then return 0, 0, 0 end
  local size = 0
  for i = 1, removed do
    local _, stored = header(oldest[i][2])
    size = size + stored
  end
  if #oldest > removed then
    -- Everything before the new oldest: whole nodes of the stream at
    -- once, where XDEL marks entries one by one.
    local first = oldest[removed + 1][1]
    redis.call('XTRIM', stream, 'MINID', first)
    redis.call('ZADD', P .. ':first', seq_of(first), channel)
  else
    redis.call('DEL', stream)
  end
  return removed, size, seq_of(oldest[removed][1])
end

-- Removes the COUNT oldest messages of CHANNEL (fewer if it holds fewer);
-- false when it holds none.
local function drop_oldest(channel, keep, count)
  count = count or 1
  local cm = P .. ':cm:' .. channel
  local left = held(channel)
  local any, last_removed = false, 0
  while count > 0 and left > 0 do
    local removed, size, last = remove_oldest(channel, count)
    if removed == 0 then break end
    any, last_removed = true, last
    count = count - removed
    left = left - removed
    redis.call('HINCRBY', META, 'messages', -removed)
    redis.call('HINCRBY', META, 'bytes', -size)
  end
  if not any then return false end
  redis.call('HSET', cm, 'trimmed', num(last_removed))
  if left <= 0 then forget(channel, keep, last_removed) end
  return true
end

-- The time the oldest message of CHANNEL was published, or nil.
local function oldest_time(channel)
  local first = redis.call('XRANGE', P .. ':ch:' .. channel, '-', '+', 'COUNT', 1)[1]
  if not first then return nil end
  return (header(first[2]))
end

-- Keeps at most MAX messages of CHANNEL, none published before CUTOFF
-- (0: no age limit).
local function trim_channel(channel, max, cutoff, keep)
  local n = held(channel)
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
-- or its folded mark. (Only a tombstone's hash has a last.)
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
