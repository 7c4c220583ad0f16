-- The history's epoch and head, made with the candidate epoch (ARGV[2])
-- if there is none. Returns {epoch, head, counters...}.
local epoch = redis.call('HGET', META, 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', META, 'epoch', epoch, 'seq', 0, 'messages', 0, 'bytes', 0, 'channels', 0, 'forgotten', 0)
end
local result = {epoch, redis.call('HGET', META, 'seq')}
for _, c in ipairs(counters()) do result[#result + 1] = c end
return result
