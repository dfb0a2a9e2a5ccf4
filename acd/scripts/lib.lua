-- Shared by every ACD script. The loader (acd/lua.py) puts the constants from
-- acd/keys.py and acd/limits.py above this file, keeps only the functions a script
-- uses, and puts the script's own body below it.
--
-- Keys are built from the prefix, which carries the ACD's hash tag: every key a script
-- touches is in the same Redis Cluster slot as the anchor key it is sent with (KEYS[1]).
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

-- The candidate index has one family of sorted sets per mode. 'voice' holds the agents
-- free for a voice call (so wholly idle); 'chat' and 'sms' hold those who can take one
-- more of that channel but no voice call (busy with digital work already, or without
-- voice capacity). A chat is offered from 'voice' and 'chat' together. So an idle
-- agent sits in one family only, and an offer takes them out of (queues x skills + 1)
-- sets rather than three times as many.
local function modes_of(a)
  if routable(a, 'voice') then
    return {'voice'}
  end
  local out = {}
  for _, c in ipairs(CHANNELS) do
    if c ~= 'voice' and routable(a, c) then
      out[#out + 1] = c
    end
  end
  return out
end

local function set(a, writes, field, value)
  a[field] = value
  writes[#writes + 1] = field
  writes[#writes + 1] = value
end

-- The index entries the agent should have now, as {suffix -> score}: for each queue
-- and mode, the queue's set and one set per skill the queue indexes ('skills_ix':
-- its own required skills and any a call has asked for there) at the agent's level.
local function entries_of(a, id, modes)
  local want = {}
  if #modes == 0 then
    return want
  end
  local skills = cjson.decode(a.skills)
  for _, q in ipairs(cjson.decode(a.queues)) do
    local meta = redis.call('HMGET', key(K_QUEUE, q), 'strategy', 'skills_ix')
    local s = num(score(a, id, q, meta[1]))
    local indexed = cjson.decode(meta[2] or '{}')
    for _, mode in ipairs(modes) do
      local base = K_AVAIL .. mode .. ':' .. q
      want[base] = s
      for skill, level in pairs(skills) do
        if indexed[skill] then
          want[base .. ':' .. skill .. ':' .. level] = s
        end
      end
    end
  end
  return want
end

-- 'ix' lists the entries last written ("suffix=score ..."), so taking an agent out of
-- the index needs neither their configuration nor any queue's.
local function parse_ix(ix)
  local have = {}
  for suffix, s in string.gmatch(ix or '', '(%S+)=(%S+)') do
    have[suffix] = s
  end
  return have
end

local function unindex(id, ix)
  for suffix, _ in pairs(parse_ix(ix)) do
    redis.call('ZREM', P .. suffix, id)
  end
end

-- After a change to an agent (already made in `a`, the hash as read, and listed in
-- `writes`): put them in, or take them out of, the candidate indexes they belong to
-- now, writing only the entries that differ; append a status event if what a
-- supervisor sees has changed; write the agent back in one HSET. Every change to an
-- agent ends here, so the index always equals `routable`.
local function settle(id, a, writes)
  local want = entries_of(a, id, modes_of(a))
  local have = parse_ix(a.ix)
  local parts = {}
  for suffix, s in pairs(want) do
    if have[suffix] ~= s then
      redis.call('ZADD', P .. suffix, s, id)
    end
    parts[#parts + 1] = suffix .. '=' .. s
  end
  for suffix, _ in pairs(have) do
    if want[suffix] == nil then
      redis.call('ZREM', P .. suffix, id)
    end
  end
  table.sort(parts)
  local ix = table.concat(parts, ' ')
  if ix ~= (a.ix or '') then
    set(a, writes, 'ix', ix)
  end
  local status = status_of(a)
  local reason = a.reason or ''
  local shown = status .. '|' .. a.presence .. '|' .. reason
  if shown ~= a.shown then
    emit('status', {'agent', id, 'from', a.status or '', 'to', status, 'presence', a.presence, 'reason', reason})
    if status ~= a.status then
      set(a, writes, 'status', status)
      set(a, writes, 'since', num(NOW))
    end
    set(a, writes, 'shown', shown)
  end
  if #writes > 0 then
    redis.call('HSET', key(K_AGENT, id), unpack(writes))
  end
  return a
end

-- Settle an agent whose hash was changed directly (configuration, strategy change).
local function reindex(id)
  local a = hash(key(K_AGENT, id))
  if a.presence == nil then
    return nil
  end
  return settle(id, a, {})
end

-- Make sure the queue indexes these skills (a table skill -> anything); the first time
-- a skill is asked for in a queue, every member is indexed for it, once.
local function index_skills(q, skills)
  local qk = key(K_QUEUE, q)
  local indexed = cjson.decode(redis.call('HGET', qk, 'skills_ix') or '{}')
  local grew = false
  for skill, _ in pairs(skills) do
    if not indexed[skill] then
      indexed[skill] = true
      grew = true
    end
  end
  if grew then
    redis.call('HSET', qk, 'skills_ix', cjson.encode(indexed))
    for _, aid in ipairs(redis.call('ZRANGE', key(K_MEMBERS, q), 0, -1)) do
      reindex(aid)
    end
  end
  return grew
end

-- Reserve the agent for an offer of this call.
local function take(aid, channel, cid)
  local a = hash(key(K_AGENT, aid))
  local w = {}
  set(a, w, 'load:' .. channel, n(a['load:' .. channel]) + 1)
  set(a, w, 'offered', n(a.offered) + 1)
  redis.call('SADD', key(K_TASKS, aid), cid)
  settle(aid, a, w)
end

-- An offer to the agent ended without their answer. `pause`: they let it ring out.
local function release(aid, channel, cid, pause)
  if redis.call('SREM', key(K_TASKS, aid), cid) == 0 then
    return
  end
  local a = hash(key(K_AGENT, aid))
  local w = {}
  set(a, w, 'load:' .. channel, n(a['load:' .. channel]) - 1)
  set(a, w, 'offered', n(a.offered) - 1)
  if pause and a.presence == 'available' then
    set(a, w, 'presence', 'not-ready')
    set(a, w, 'reason', 'no-answer')
  end
  settle(aid, a, w)
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

-- What routing needs of a call in line, one string per call in the queue's REQS hash:
-- channel, queued-at, preferred agent, their window's end, simple flag, skills JSON.
local function enlist(cid, q, c)
  local desc = table.concat({c.channel, c.queued, c.pref or '', c.pref_until or '0', c.simple or '0', c.skills}, '\t')
  redis.call('HSET', key(K_REQS, q), cid, desc)
end

local function delist(cid, q)
  redis.call('HDEL', key(K_REQS, q), cid)
end

local function finish(cid, q, result)
  delist(cid, q)
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
