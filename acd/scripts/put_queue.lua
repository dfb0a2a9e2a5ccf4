-- Create or change a queue. ARGV[5] name, [6] routing JSON, [7] strategy, [8] priority.
-- A new strategy (or a newly required skill) re-scores every member's index entries
-- in the same step.
local q = ARGV[5]
local qk = key(K_QUEUE, q)
local before = redis.call('HGET', qk, 'strategy')
redis.call('HSET', qk, 'cfg', ARGV[6], 'strategy', ARGV[7], 'priority', ARGV[8])
redis.call('ZADD', key(K_QUEUES), ARGV[8], q)
local grew = index_skills(q, cjson.decode(ARGV[6]).skills)
if before ~= ARGV[7] and not grew then
  for _, aid in ipairs(redis.call('ZRANGE', key(K_MEMBERS, q), 0, -1)) do
    reindex(aid)
  end
end
return {'OK'}
