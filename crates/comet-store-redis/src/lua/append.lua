-- Stores a batch of drafts, all or nothing. ARGV: prefix, the epoch this
-- node serves, now (ms), max messages per channel, age cutoff (ms, 0:
-- none), max total bytes (0: none), tombstones kept, log length, key
-- window (ms), max keys, draft count, then per draft:
-- channel, its mark, event, data, stored size, key hash ('' without a
-- key), fingerprint, subscribers.
-- Returns {'ok', results..., counters...} with a result per draft
-- ('s SEQ' stored, 'r SEQ SUBSCRIBERS' a repeat), {'conflict', index}, or
-- {'reset', epoch} when the history is not the one this node serves.
-- Counts are kept in locals and written once, and a channel beyond its
-- count limit is trimmed in batches (see SLACK): every redis.call costs
-- about a microsecond, and a publish to a channel is made of five.
local expected = ARGV[2]
local now_text = ARGV[3]
local now = tonumber(now_text)
local max_messages = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5])
local max_bytes = tonumber(ARGV[6])
local keep = tonumber(ARGV[7])
local log_max = ARGV[8]
local key_window = tonumber(ARGV[9])
local max_keys = tonumber(ARGV[10])
local n = tonumber(ARGV[11])
local FIRST, FIELDS = 11, 8
-- A channel may hold up to SLACK messages beyond its limit between
-- trims, so a full channel is trimmed once every SLACK + 1 publishes
-- rather than on each. Readers never see them: every read trims the
-- channel to its limit first (trim_channel).
local SLACK = math.min(64, math.floor(max_messages / 16))

local meta = redis.call('HMGET', META, 'epoch', 'seq', 'messages', 'bytes', 'channels', 'forgotten', 'keys')
if meta[1] ~= expected then return {'reset', meta[1] or ''} end
local head = tonumber(meta[2])
local messages_before, bytes_before = tonumber(meta[3] or '0'), tonumber(meta[4] or '0')
-- Whether the counts returned can be those read above with this
-- script's messages and bytes: false once anything else changed them.
local counts_known = true

local keyed = false
for i = 0, n - 1 do
  if ARGV[FIRST + i * FIELDS + 6] ~= '' then keyed = true end
end
if keyed then
  forget_keys(now - key_window, max_keys)
  counts_known = false
end

-- Judge every keyed draft before anything is stored.
local next = head
local drafted = {}
local repeats = {}
for i = 0, n - 1 do
  local b = FIRST + i * FIELDS
  local hash = ARGV[b + 6]
  local found = nil
  if hash ~= '' then
    found = drafted[hash]
    if not found then
      local kept = redis.call('GET', P .. ':k:' .. hash)
      if kept then
        local fp, seq, subs, at = string.match(kept, '^(%x+) (%d+) (%d+) (%d+)$')
        if fp and tonumber(at) >= now - key_window then found = {fp, seq, subs} end
      end
    end
  end
  if found then
    if found[1] ~= ARGV[b + 7] then return {'conflict', i} end
    repeats[i] = found
  else
    next = next + 1
    if hash ~= '' then drafted[hash] = {ARGV[b + 7], num(next), ARGV[b + 8]} end
  end
end

local results = {'ok'}
local channels, touched = {}, {}
local seq = head
local added_messages, added_bytes, added_keys = 0, 0, 0
for i = 0, n - 1 do
  local b = FIRST + i * FIELDS
  local found = repeats[i]
  if found then
    results[#results + 1] = 'r ' .. found[2] .. ' ' .. found[3]
  else
    seq = seq + 1
    local channel, mark, event, data = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local size_text = ARGV[b + 5]
    local size = tonumber(size_text)
    local seq_text = num(seq)
    local state = channels[channel]
    if not state then
      local count = held(channel)
      if count == 0 then
        -- New, or revived from its tombstone or its mark: a reader from
        -- before then gets a gap.
        local cm = P .. ':cm:' .. channel
        local trimmed = remembered(channel, mark)
        if redis.call('ZREM', P .. ':forgotten', channel) == 1 then
          redis.call('HINCRBY', META, 'forgotten', -1)
        end
        redis.call('DEL', cm)
        redis.call('HSET', cm, 'trimmed', trimmed, 'm', mark)
        redis.call('ZADD', P .. ':names', 0, channel)
        redis.call('ZADD', P .. ':first', seq, channel)
        redis.call('HINCRBY', META, 'channels', 1)
        counts_known = false
      end
      state = {held = count}
      channels[channel] = state
      touched[#touched + 1] = channel
    end
    local id = seq_text .. '-0'
    redis.call('XADD', P .. ':ch:' .. channel, id, 'h', now_text .. ' ' .. size_text .. ' ' .. event, 'd', data)
    state.held = state.held + 1
    added_messages = added_messages + 1
    added_bytes = added_bytes + size
    redis.call('XADD', P .. ':log', 'MAXLEN', '~', log_max, id, 'h', now_text .. ' ' .. channel .. ' ' .. event, 'd', data)
    local hash = ARGV[b + 6]
    if hash ~= '' then
      redis.call('SET', P .. ':k:' .. hash, ARGV[b + 7] .. ' ' .. seq_text .. ' ' .. ARGV[b + 8] .. ' ' .. now_text, 'PX', key_window)
      added_keys = added_keys + redis.call('ZADD', P .. ':korder', now, hash)
    end
    results[#results + 1] = 's ' .. seq_text
  end
end

-- Each touched channel that holds more than SLACK beyond its limit: its
-- oldest beyond the limit removed, their highest seq its trimmed mark.
local removed_messages, removed_bytes = 0, 0
for _, channel in ipairs(touched) do
  local state = channels[channel]
  local excess = state.held - max_messages
  if excess > SLACK then
    local last_removed = 0
    while excess > 0 do
      local removed, size, last = remove_oldest(channel, excess)
      if removed == 0 then break end
      excess = excess - removed
      state.held = state.held - removed
      removed_messages = removed_messages + removed
      removed_bytes = removed_bytes + size
      last_removed = last
    end
    if last_removed > 0 then
      redis.call('HSET', P .. ':cm:' .. channel, 'trimmed', num(last_removed))
    end
  end
end
-- Nothing above changed the counts of messages and bytes: one write.
local bytes = bytes_before + added_bytes - removed_bytes
redis.call('HSET', META, 'seq', num(seq),
  'messages', num(messages_before + added_messages - removed_messages), 'bytes', num(bytes))
if added_keys > 0 then
  redis.call('HINCRBY', META, 'keys', added_keys)
  forget_keys(now - key_window, max_keys)
end

if cutoff > 0 then
  for _, channel in ipairs(touched) do
    trim_channel(channel, max_messages, cutoff, keep)
  end
  counts_known = false
end
if max_bytes > 0 and bytes > max_bytes then
  counts_known = false
  while tonumber(redis.call('HGET', META, 'bytes')) > max_bytes
    and tonumber(redis.call('HGET', META, 'messages')) > 1 do
    local oldest = redis.call('ZRANGE', P .. ':first', 0, 0, 'WITHSCORES')
    if #oldest == 0 or tonumber(oldest[2]) >= seq then break end
    if not drop_oldest(oldest[1], keep) then
      redis.call('ZREM', P .. ':first', oldest[1])
    end
  end
end
if counts_known then
  results[#results + 1] = meta[5] or '0'
  results[#results + 1] = meta[6] or '0'
  results[#results + 1] = num(messages_before + added_messages - removed_messages)
  results[#results + 1] = num(bytes)
  results[#results + 1] = meta[7] or '0'
else
  for _, c in ipairs(counters()) do results[#results + 1] = c end
end
return results
