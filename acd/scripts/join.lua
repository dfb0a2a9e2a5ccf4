-- A call joins a queue. ARGV[5] call id, [6] queue, [7] priority, [8] skills JSON
-- (on top of the queue's), [9] channel, [10] preferred agent ('' none), [11] simple
-- '1'/'0', [12] caller number ('' unknown; an E.164 number also finds the agent who
-- answered the caller recently, as the preferred agent). Returns its position in line.
local cid, q = ARGV[5], ARGV[6]
local cfg = queue_cfg(q)
if not cfg then
  return fail('unknown-queue', q)
end
local ck = key(K_CALL, cid)
local state = redis.call('HGET', ck, 'state')
if state == 'ended' then
  return fail('call-ended', cid)
elseif state then
  return fail('call-exists', cid)
end
index_skills(q, cjson.decode(ARGV[8]))
local priority = tonumber(ARGV[7])
local seq = redis.call('INCR', key(K_SEQ))
local order = num(place(priority, seq))
local pref, pref_until = ARGV[10], 0
if pref == '' and cfg.preferred_agent_wait_seconds > 0 and string.match(ARGV[12], '^%+%d+$') then
  -- the agent who answered this caller last, if they still serve this queue
  local recent = redis.call('GET', key(K_RECENT, ARGV[12]))
  if recent and redis.call('ZSCORE', key(K_MEMBERS, q), recent) then
    pref = recent
  end
end
if pref ~= '' and cfg.preferred_agent_wait_seconds > 0 then
  pref_until = NOW + cfg.preferred_agent_wait_seconds * 1000
end
redis.call('HSET', ck, 'state', 'waiting', 'queue', q, 'channel', ARGV[9], 'priority', ARGV[7],
  'seq', seq, 'order', order, 'skills', ARGV[8], 'joined', num(NOW), 'queued', num(NOW),
  'pref', pref, 'pref_until', num(pref_until), 'simple', ARGV[11], 'caller', ARGV[12],
  'kind', 'call', 'callback', '', 'agents', '', 'attempts', 0)
redis.call('EXPIRE', ck, CALL_TTL_S)
enter_line(cid, q, order, num(NOW))
enlist(cid, q, {channel = ARGV[9], queued = num(NOW), pref = pref, pref_until = num(pref_until),
  simple = ARGV[11], skills = ARGV[8]})
if cfg.max_wait_seconds then
  redis.call('ZADD', key(K_MAXWAIT), num(NOW + cfg.max_wait_seconds * 1000), cid)
end
count(q, 'joined')
emit('join', {'call', cid, 'queue', q, 'priority', ARGV[7], 'channel', ARGV[9], 'skills', ARGV[8], 'preferred', pref, 'caller', ARGV[12]})
return {'OK', redis.call('ZRANK', key(K_WAITING, q), cid) + 1}
