-- Remove an agent who holds nothing. ARGV[5] id.
local id = ARGV[5]
local k = key(K_AGENT, id)
local a = hash(k)
if a.presence == nil then
  return fail('unknown-agent', id)
end
if n(a.offered) > 0 or n(a.active) > 0 then
  return fail('agent-busy', id)
end
local queues = cjson.decode(a.queues)
unindex(id, a.ix)
for _, q in ipairs(queues) do
  redis.call('ZREM', key(K_MEMBERS, q), id)
end
redis.call('ZREM', key(K_WRAPUPS), id)
redis.call('DEL', k, key(K_TASKS, id), key(K_PROFILE, id))
redis.call('SREM', key(K_AGENTS), id)
emit('status', {'agent', id, 'from', a.status or '', 'to', 'removed', 'presence', '', 'reason', ''})
return {'OK'}
