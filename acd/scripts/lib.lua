-- Shared by every ACD script. The loader (acd/lua.py) puts the constants from
-- acd/keys.py and acd/limits.py above this file and the script's own body below it.
--
-- ARGV[1] key prefix (hash-tagged), ARGV[2] now in ms ('' = the Redis server's clock,
-- one clock for every process), ARGV[3] random seed 1..2^31-2, ARGV[4] local day's
-- offset from UTC in ms; each script's own arguments start at ARGV[5].
--
-- Numbers go back into Redis through num(): Lua prints numbers with 14 digits, and a
-- place in line (priority x 2^38 + arrival) needs all 16.

local P = ARGV[1]
local NOW
if ARGV[2] == '' then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  NOW = tonumber(ARGV[2])
end
local SEED = tonumber(ARGV[3])
local DAY = math.floor((NOW + tonumber(ARGV[4])) / 86400000)

local function num(x)
  return string.format('%.0f', x)
end

-- Park-Miller: exact in doubles, and seeded by the caller, so tests can replay a draw.
local function rand()
  SEED = (SEED * 16807) % 2147483647
  return (SEED - 1) / 2147483646
end

local function n(v)
  return tonumber(v or '0') or 0
end

local function key(suffix, id)
  return P .. suffix .. (id or '')
end

local function avail_key(channel, q)
  return P .. K_AVAIL .. channel .. ':' .. q
end

local function hash(k)
  local raw = redis.call('HGETALL', k)
  local t = {}
  for i = 1, #raw, 2 do
    t[raw[i]] = raw[i + 1]
  end
  return t
end

local function split(s)
  local out = {}
  if s == nil or s == '' then
    return out
  end
  for part in string.gmatch(s, '[^,]+') do
    out[#out + 1] = part
  end
  return out
end

local function fail(code, detail)
  return {'E', code, detail or ''}
end

local function emit(kind, fields)
  local args = {'XADD', P .. K_EVENTS, 'MAXLEN', '~', EVENT_MAXLEN, '*', 'type', kind, 'at', num(NOW)}
  for i = 1, #fields do
    args[#args + 1] = fields[i]
  end
  redis.call(unpack(args))
end

local function count(q, field, by)
  redis.call('HINCRBY', key(K_STATS, q), field, by or 1)
end

local function queue_cfg(q)
  local raw = redis.call('HGET', key(K_QUEUE, q), 'cfg')
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

-- Agents ------------------------------------------------------------------------

-- Free for one more task on this channel now. Voice is exclusive both ways: no voice
-- call while any task is open, no chat or SMS while on a voice call.
local function routable(a, channel)
  if a.presence ~= 'available' or n(a.wrap_until) > 0 then
    return false
  end
  if channel == 'voice' then
    if n(a['cap:voice']) < 1 then
      return false
    end
    for _, c in ipairs(CHANNELS) do
      if n(a['load:' .. c]) > 0 then
        return false
      end
    end
    return true
  end
  if n(a['load:voice']) > 0 then
    return false
  end
  return n(a['load:' .. channel]) < n(a['cap:' .. channel])
end

local function status_of(a)
  if n(a.wrap_until) > 0 then
    return 'wrap-up'
  end
  if n(a.active) > 0 then
    return 'on-call'
  end
  if n(a.offered) > 0 then
    return 'offered'
  end
  return a.presence
end

local function score(a, id, q, strategy)
  if strategy == 'longest_idle' then
    return n(a.idle_since)
  elseif strategy == 'fewest_calls' then
    return n(a.calls_day) * DAY_SCORE_SPAN + n(a.calls)
  elseif strategy == 'least_talk_time' then
    return n(a.talk_day) * DAY_SCORE_SPAN + n(a.talk_ms)
  end
  return n(redis.call('ZSCORE', key(K_MEMBERS, q), id))
end

local function unindex(id, queues, skills)
  for _, q in ipairs(queues) do
    for _, c in ipairs(CHANNELS) do
      local base = avail_key(c, q)
      redis.call('ZREM', base, id)
      for skill, level in pairs(skills) do
        redis.call('ZREM', base .. ':' .. skill .. ':' .. level, id)
      end
    end
  end
end

-- Put the agent in (or take them out of) every candidate index they belong to, with
-- fresh scores, and append a status event if what a supervisor sees has changed.
-- Called after every change to an agent, so the index always equals `routable`.
local function reindex(id)
  local k = key(K_AGENT, id)
  local a = hash(k)
  if a.presence == nil then
    return nil
  end
  local queues = cjson.decode(a.queues)
  local skills = cjson.decode(a.skills)
  local ok = {}
  for _, c in ipairs(CHANNELS) do
    ok[c] = routable(a, c)
  end
  for _, q in ipairs(queues) do
    local s = nil
    for _, c in ipairs(CHANNELS) do
      local base = avail_key(c, q)
      if ok[c] then
        if s == nil then
          s = num(score(a, id, q, redis.call('HGET', key(K_QUEUE, q), 'strategy')))
        end
        redis.call('ZADD', base, s, id)
        for skill, level in pairs(skills) do
          redis.call('ZADD', base .. ':' .. skill .. ':' .. level, s, id)
        end
      else
        redis.call('ZREM', base, id)
        for skill, level in pairs(skills) do
          redis.call('ZREM', base .. ':' .. skill .. ':' .. level, id)
        end
      end
    end
  end
  local status = status_of(a)
  local reason = a.reason or ''
  local shown = status .. '|' .. a.presence .. '|' .. reason
  if shown ~= a.shown then
    if status ~= a.status then
      redis.call('HSET', k, 'status', status, 'since', num(NOW), 'shown', shown)
    else
      redis.call('HSET', k, 'shown', shown)
    end
    emit('status', {'agent', id, 'from', a.status or '', 'to', status, 'presence', a.presence, 'reason', reason})
  end
  return a
end

-- Reserve the agent for an offer of this call.
local function take(aid, channel, cid)
  local k = key(K_AGENT, aid)
  redis.call('HINCRBY', k, 'load:' .. channel, 1)
  redis.call('HINCRBY', k, 'offered', 1)
  redis.call('SADD', key(K_TASKS, aid), cid)
  reindex(aid)
end

-- An offer to the agent ended without their answer. `pause`: they let it ring out.
local function release(aid, channel, cid, pause)
  local k = key(K_AGENT, aid)
  if redis.call('SREM', key(K_TASKS, aid), cid) == 0 then
    return
  end
  redis.call('HINCRBY', k, 'load:' .. channel, -1)
  redis.call('HINCRBY', k, 'offered', -1)
  if pause and redis.call('HGET', k, 'presence') == 'available' then
    redis.call('HSET', k, 'presence', 'not-ready', 'reason', 'no-answer')
  end
  reindex(aid)
end

-- The queues any of these agents serve, as a JSON list: where to route once they are free.
local function queues_of(agents)
  local seen, out = {}, {}
  for _, aid in ipairs(agents) do
    local raw = redis.call('HGET', key(K_AGENT, aid), 'queues')
    if raw then
      for _, q in ipairs(cjson.decode(raw)) do
        if not seen[q] then
          seen[q] = true
          out[#out + 1] = q
        end
      end
    end
  end
  if #out == 0 then
    return '[]'
  end
  return cjson.encode(out)
end

-- Calls ---------------------------------------------------------------------------

local function place(priority, seq)
  return (PRIORITY_MAX - priority) * SEQ_SPAN + seq
end

local function enter_line(cid, q, order, joined)
  redis.call('ZADD', key(K_WAITING, q), order, cid)
  redis.call('ZADD', key(K_SINCE, q), joined, cid)
end

local function leave_line(cid, q)
  redis.call('ZREM', key(K_WAITING, q), cid)
  redis.call('ZREM', key(K_SINCE, q), cid)
end

-- Back to its own place in line (not the tail): ahead of everyone who came later.
local function requeue(cid, c)
  redis.call('HSET', key(K_CALL, cid), 'state', 'waiting', 'agents', '')
  redis.call('ZREM', key(K_OFFERS), cid)
  enter_line(cid, c.queue, c.order, c.joined)
end

local function finish(cid, result)
  local ck = key(K_CALL, cid)
  redis.call('HSET', ck, 'state', 'ended', 'result', result, 'ended', num(NOW))
  redis.call('ZREM', key(K_MAXWAIT), cid)
  redis.call('EXPIRE', ck, ENDED_CALL_TTL_S)
end

-- Each agent of the offer lets it ring out: released (and paused if the queue says
-- so), one no-answer event each; the call goes back to its place.
local function ring_out(cid, c, agents)
  local cfg = queue_cfg(c.queue)
  local pause = cfg == nil or cfg.autopause
  for _, aid in ipairs(agents) do
    release(aid, c.channel, cid, pause)
    emit('no-answer', {'call', cid, 'queue', c.queue, 'agent', aid})
  end
  requeue(cid, c)
end
