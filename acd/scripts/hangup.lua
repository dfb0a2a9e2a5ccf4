-- The call's caller (or agent) hung up, or the task is cancelled. ARGV[5] call,
-- [6] 'hangup' | 'cancel'. Waiting or ringing: an abandon, counted with its wait
-- (short ones apart); connected: the end, talk time counted, wrap-up begins. A
-- waiting callback has no caller leg to hang up: 'hangup' keeps it, 'cancel' ends it.
-- Returns {'OK', result, agents, JSON list of the queues the freed agents serve}.
local cid, mode = ARGV[5], ARGV[6]
local ck = key(K_CALL, cid)
local c = hash(ck)
if c.state == nil then
  return fail('unknown-call', cid)
elseif c.state == 'ended' then
  return fail('call-ended', cid)
end
local cfg = queue_cfg(c.queue) or {wrapup_seconds = 0, short_abandon_seconds = 0}
if c.state == 'connected' then
  local aid = c.agent
  local a = hash(key(K_AGENT, aid))
  local w = {}
  local talk = NOW - n(c.answered)
  redis.call('SREM', key(K_TASKS, aid), cid)
  set(a, w, 'load:' .. c.channel, n(a['load:' .. c.channel]) - 1)
  set(a, w, 'active', n(a.active) - 1)
  if n(a.talk_day) == DAY then
    set(a, w, 'talk_ms', num(n(a.talk_ms) + talk))
  else
    set(a, w, 'talk_day', DAY)
    set(a, w, 'talk_ms', num(talk))
  end
  finish(cid, c.queue, 'completed')
  count(c.queue, 'completed')
  count(c.queue, 'talk_ms', talk)
  emit('end', {'call', cid, 'queue', c.queue, 'agent', aid, 'result', 'completed', 'talk_ms', num(talk)})
  if c.channel == 'voice' and cfg.wrapup_seconds > 0 then
    local untl = num(NOW + cfg.wrapup_seconds * 1000)
    set(a, w, 'wrap_until', untl)
    redis.call('ZADD', key(K_WRAPUPS), untl, aid)
    emit('wrap-up', {'agent', aid, 'call', cid, 'until', untl})
  elseif n(a.active) == 0 then
    set(a, w, 'idle_since', num(NOW))
  end
  settle(aid, a, w)
  return {'OK', 'completed', aid, queues_of({aid})}
end
if c.kind == 'callback' and c.state == 'waiting' and mode == 'hangup' then
  return {'OK', 'callback-kept', '', '[]'}
end
local agents = split(c.agents)
if c.state == 'offered' then
  redis.call('ZREM', key(K_OFFERS), cid)
  for _, aid in ipairs(agents) do
    release(aid, c.channel, cid, false)
  end
else
  leave_line(cid, c.queue)
end
local wait = NOW - n(c.joined)
if mode == 'cancel' or c.kind == 'callback' then
  finish(cid, c.queue, 'cancelled')
  count(c.queue, 'cancelled')
  emit('end', {'call', cid, 'queue', c.queue, 'agent', c.agents, 'result', 'cancelled', 'wait_ms', num(wait)})
  return {'OK', 'cancelled', c.agents, queues_of(agents)}
end
local short = wait < cfg.short_abandon_seconds * 1000
finish(cid, c.queue, short and 'short-abandon' or 'abandoned')
if short then
  count(c.queue, 'short_abandoned')
  count(c.queue, 'short_abandoned_wait_ms', wait)
else
  count(c.queue, 'abandoned')
  count(c.queue, 'abandoned_wait_ms', wait)
end
emit('abandon', {'call', cid, 'queue', c.queue, 'agent', c.agents, 'wait_ms', num(wait), 'short', short and '1' or '0'})
return {'OK', short and 'short-abandon' or 'abandoned', c.agents, queues_of(agents)}
