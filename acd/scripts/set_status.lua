-- An agent sets their presence. ARGV[5] id, [6] available|break|offline, [7] reason.
-- Available also ends a wrap-up early and clears a not-ready left by a ring-out.
-- Returns the agent's queues, so the caller can route them at once.
local id = ARGV[5]
local target = ARGV[6]
local a = hash(key(K_AGENT, id))
if a.presence == nil then
  return fail('unknown-agent', id)
end
if target == 'offline' and (n(a.offered) > 0 or n(a.active) > 0) then
  return fail('agent-busy', id)
end
local w = {}
if n(a.wrap_until) > 0 and target ~= 'break' then
  -- wrap-up ends now; a break chosen during wrap-up starts when the wrap-up ends
  set(a, w, 'wrap_until', 0)
  redis.call('ZREM', key(K_WRAPUPS), id)
  emit('wrap-up-end', {'agent', id, 'early', '1'})
  if n(a.active) == 0 then
    set(a, w, 'idle_since', num(NOW))
  end
elseif target == 'available' and a.presence ~= 'available' and n(a.active) == 0 then
  set(a, w, 'idle_since', num(NOW))
end
set(a, w, 'presence', target)
set(a, w, 'reason', ARGV[7])
settle(id, a, w)
return {'OK', a.queues}
