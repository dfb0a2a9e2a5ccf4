-- Time-driven changes, found by any process from the deadlines stored in Redis (never
-- by a timer in a process that may have died). ARGV[5] batch size.
--  * offers past their deadline: every agent of the offer rang out (the dialing process
--    died or lost track): released and paused as the queue says; the call goes back.
--  * wrap-ups past their end: the agent is free again.
--  * calls past their queue's max wait: overflow to another queue, voicemail (the
--    call leaves the ACD; the transport plays the voicemail), or a callback task.
-- Returns {'OK', expired, wrapped, max-waits, more}: expired {call, queue, agents},
-- wrapped {agent}, max-waits {call, action, queue}; more = '1' when a batch was full.
local batch = tonumber(ARGV[5])
local more = '0'

local expired = {}
local due = redis.call('ZRANGEBYSCORE', key(K_OFFERS), '-inf', num(NOW), 'LIMIT', 0, batch)
if #due == batch then
  more = '1'
end
for _, cid in ipairs(due) do
  local c = hash(key(K_CALL, cid))
  if c.state == 'offered' and n(c.deadline) <= NOW then
    ring_out(cid, c, split(c.agents))
    expired[#expired + 1] = {cid, c.queue, c.agents}
  else
    redis.call('ZREM', key(K_OFFERS), cid)
  end
end

local wrapped = {}
due = redis.call('ZRANGEBYSCORE', key(K_WRAPUPS), '-inf', num(NOW), 'LIMIT', 0, batch)
if #due == batch then
  more = '1'
end
for _, aid in ipairs(due) do
  redis.call('ZREM', key(K_WRAPUPS), aid)
  local a = hash(key(K_AGENT, aid))
  local untl = n(a.wrap_until)
  if untl > 0 and untl <= NOW then
    -- idle since the wrap-up ended, not since this sweep noticed it
    local w = {}
    set(a, w, 'wrap_until', 0)
    set(a, w, 'idle_since', num(untl))
    emit('wrap-up-end', {'agent', aid, 'early', '0'})
    settle(aid, a, w)
    wrapped[#wrapped + 1] = aid
  end
end

local waits = {}
due = redis.call('ZRANGEBYSCORE', key(K_MAXWAIT), '-inf', num(NOW), 'LIMIT', 0, batch)
if #due == batch then
  more = '1'
end
for _, cid in ipairs(due) do
  local ck = key(K_CALL, cid)
  local c = hash(ck)
  local cfg = c.queue and queue_cfg(c.queue)
  if c.state == 'offered' then
    -- decide once the offer is answered or rings out
    redis.call('ZADD', key(K_MAXWAIT), c.deadline, cid)
  elseif c.state ~= 'waiting' or c.kind == 'callback' or not cfg then
    redis.call('ZREM', key(K_MAXWAIT), cid)
  else
    redis.call('ZREM', key(K_MAXWAIT), cid)
    local action = cfg.on_max_wait.action
    local target = cfg.on_max_wait.queue
    local tcfg = target and queue_cfg(target)
    if action == 'overflow' and not tcfg then
      action = 'voicemail'
    end
    count(c.queue, 'max_wait')
    if action == 'overflow' then
      leave_line(cid, c.queue)
      delist(cid, c.queue)
      index_skills(target, cjson.decode(c.skills))
      local order = num(place(n(c.priority), n(c.seq)))
      redis.call('HSET', ck, 'queue', target, 'order', order, 'queued', num(NOW))
      c.queued = num(NOW)
      enlist(cid, target, c)
      enter_line(cid, target, order, c.joined)
      if tcfg.max_wait_seconds then
        redis.call('ZADD', key(K_MAXWAIT), num(NOW + tcfg.max_wait_seconds * 1000), cid)
      end
      count(target, 'overflowed_in')
      emit('overflow', {'call', cid, 'queue', c.queue, 'to', target})
      waits[#waits + 1] = {cid, 'overflow', target}
    elseif action == 'callback' then
      redis.call('HSET', ck, 'kind', 'callback', 'callback', c.caller or '')
      count(c.queue, 'callbacks')
      emit('callback', {'call', cid, 'queue', c.queue, 'number', c.caller or ''})
      waits[#waits + 1] = {cid, 'callback', c.queue}
    else
      leave_line(cid, c.queue)
      finish(cid, c.queue, 'voicemail')
      count(c.queue, 'voicemail')
      emit('voicemail', {'call', cid, 'queue', c.queue, 'wait_ms', num(NOW - n(c.joined))})
      waits[#waits + 1] = {cid, 'voicemail', c.queue}
    end
  end
end
return {'OK', expired, wrapped, waits, more}
