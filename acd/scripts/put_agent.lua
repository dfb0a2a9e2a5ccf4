-- Create or change an agent's configuration; live state (status, load, counts) stays.
-- ARGV[5] id, [6] skills JSON, [7] queues JSON, [8] voice, [9] chat, [10] sms capacity,
-- [11] weight, [12] order ('' = after the ordered ones), [13] contact JSON, [14] name.
local id = ARGV[5]
local k = key(K_AGENT, id)
local skills = cjson.decode(ARGV[6])
local queues = cjson.decode(ARGV[7])
for _, q in ipairs(queues) do
  if redis.call('HEXISTS', key(K_QUEUE, q), 'cfg') == 0 then
    return fail('unknown-queue', q)
  end
end
local old = hash(k)
local wanted = {}
for _, q in ipairs(queues) do
  wanted[q] = true
end
if old.presence then
  local old_queues = cjson.decode(old.queues)
  unindex(id, old.ix)
  redis.call('HSET', k, 'ix', '')
  for _, q in ipairs(old_queues) do
    if not wanted[q] then
      redis.call('ZREM', key(K_MEMBERS, q), id)
    end
  end
else
  redis.call('HSET', k, 'presence', 'offline', 'reason', '', 'status', 'offline', 'since', num(NOW),
    'shown', 'offline|offline|', 'idle_since', num(NOW), 'offered', 0, 'active', 0)
  for _, c in ipairs(CHANNELS) do
    redis.call('HSET', k, 'load:' .. c, 0)
  end
  redis.call('SADD', key(K_AGENTS), id)
end
for _, q in ipairs(queues) do
  local mk = key(K_MEMBERS, q)
  if ARGV[12] ~= '' then
    redis.call('ZADD', mk, ARGV[12], id)
  elseif not redis.call('ZSCORE', mk, id) then
    local seq = redis.call('HINCRBY', key(K_QUEUE, q), 'positions', 1)
    redis.call('ZADD', mk, num(AUTO_POSITION_BASE + seq), id)
  end
  local qk = key(K_QUEUE, q)
  if n(redis.call('HGET', qk, 'wmax')) < tonumber(ARGV[11]) then
    redis.call('HSET', qk, 'wmax', ARGV[11])
  end
end
redis.call('HSET', k, 'skills', ARGV[6], 'queues', ARGV[7], 'cap:voice', ARGV[8], 'cap:chat', ARGV[9],
  'cap:sms', ARGV[10])
local pk = key(K_PROFILE, id)
redis.call('DEL', pk)
redis.call('HSET', pk, 'weight', ARGV[11], 'order', ARGV[12], 'contact', ARGV[13], 'name', ARGV[14])
for skill, level in pairs(skills) do
  redis.call('HSET', pk, 'sk:' .. skill, level)
end
reindex(id)
return {'OK', old.presence and 'updated' or 'created'}
