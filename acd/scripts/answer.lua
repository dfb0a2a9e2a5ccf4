-- An agent answers an offered call. ARGV[5] call, [6] agent.
-- The other agents of a ring-all offer are released in the same step.
local cid, aid = ARGV[5], ARGV[6]
local ck = key(K_CALL, cid)
local c = hash(ck)
if c.state == nil then
  return fail('unknown-call', cid)
elseif c.state == 'ended' then
  return fail('call-ended', cid)
elseif c.state == 'connected' then
  if c.agent == aid then
    return {'OK', 'duplicate', num(n(c.answered) - n(c.joined))}
  end
  return fail('already-answered', cid)
elseif c.state ~= 'offered' then
  return fail('not-offered', cid)
end
local agents = split(c.agents)
local mine = false
for _, other in ipairs(agents) do
  if other == aid then
    mine = true
  end
end
if not mine then
  return fail('not-offered', cid)
end
redis.call('HSET', ck, 'state', 'connected', 'agent', aid, 'agents', aid, 'answered', num(NOW))
redis.call('ZREM', key(K_OFFERS), cid)
redis.call('ZREM', key(K_MAXWAIT), cid)
delist(cid, c.queue)
local a = hash(key(K_AGENT, aid))
local w = {}
set(a, w, 'offered', n(a.offered) - 1)
set(a, w, 'active', n(a.active) + 1)
if n(a.calls_day) == DAY then
  set(a, w, 'calls', n(a.calls) + 1)
else
  set(a, w, 'calls_day', DAY)
  set(a, w, 'calls', 1)
end
if c.kind == 'call' and c.caller and string.match(c.caller, '^%+%d+$') then
  redis.call('SET', key(K_RECENT, c.caller), aid, 'EX', RECENT_AGENT_TTL_S)
end
local wait = NOW - n(c.joined)
count(c.queue, 'answered')
count(c.queue, 'answered_wait_ms', wait)
emit('answer', {'call', cid, 'queue', c.queue, 'agent', aid, 'kind', c.kind, 'wait_ms', num(wait)})
for _, other in ipairs(agents) do
  if other ~= aid then
    release(other, c.channel, cid, false)
  end
end
settle(aid, a, w)
return {'OK', 'answered', num(wait)}
