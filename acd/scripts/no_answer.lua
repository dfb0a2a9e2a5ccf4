-- The dialing process reports that an offered agent did not answer (rang out,
-- declined, unreachable). ARGV[5] call, [6] agent. When no agent of the offer is left
-- ringing, the call goes back to its place in line.
local cid, aid = ARGV[5], ARGV[6]
local c = hash(key(K_CALL, cid))
if c.state == nil then
  return fail('unknown-call', cid)
elseif c.state == 'ended' then
  return fail('call-ended', cid)
elseif c.state ~= 'offered' then
  return fail('not-offered', cid)
end
local rest, mine = {}, false
for _, other in ipairs(split(c.agents)) do
  if other == aid then
    mine = true
  else
    rest[#rest + 1] = other
  end
end
if not mine then
  return fail('not-offered', cid)
end
local cfg = queue_cfg(c.queue)
release(aid, c.channel, cid, cfg == nil or cfg.autopause)
emit('no-answer', {'call', cid, 'queue', c.queue, 'agent', aid})
if #rest > 0 then
  redis.call('HSET', key(K_CALL, cid), 'agents', table.concat(rest, ','))
  return {'OK', 'ringing', c.queue, queues_of({aid})}
end
requeue(cid, c)
return {'OK', 'requeued', c.queue, queues_of({aid})}
