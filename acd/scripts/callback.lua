-- A waiting caller asks to be called back: the task keeps its place in line and its
-- caller leg may end. ARGV[5] call, [6] number to call.
local cid = ARGV[5]
local ck = key(K_CALL, cid)
local c = hash(ck)
if c.state == nil then
  return fail('unknown-call', cid)
elseif c.state == 'ended' then
  return fail('call-ended', cid)
elseif c.state ~= 'waiting' then
  return fail('not-waiting', cid)
end
redis.call('HSET', ck, 'kind', 'callback', 'callback', ARGV[6])
redis.call('ZREM', key(K_MAXWAIT), cid)
count(c.queue, 'callbacks')
emit('callback', {'call', cid, 'queue', c.queue, 'number', ARGV[6]})
return {'OK', redis.call('ZRANK', key(K_WAITING, c.queue), cid) + 1}
