-- The routing decision: offer waiting calls to the best fitting free agents and
-- reserve those agents in the same step, so no agent is offered two voice calls and no
-- call is offered twice. ARGV[5] most offers to make, ARGV[6..] queues (none: all),
-- served in queue-priority order. Returns {'OK', offer...}; each offer is
-- {call, queue, kind, channel, deadline, callback number, attempt, agent...}.

local function requirement(cfg, call_skills, waited)
  local req = {}
  for skill, level in pairs(cfg.skills) do
    req[skill] = level
  end
  for skill, level in pairs(call_skills) do
    req[skill] = level
  end
  for _, step in ipairs(cfg.relax) do
    if waited < step.after_seconds * 1000 then
      break
    end
    if step.any_agent then
      return {}
    end
    for skill, level in pairs(req) do
      if level > step.min_proficiency then
        req[skill] = step.min_proficiency
      end
    end
  end
  return req
end

local function memo_key(channel, req, simple)
  local parts = {}
  for skill, level in pairs(req) do
    parts[#parts + 1] = skill .. '=' .. level
  end
  table.sort(parts)
  return channel .. (simple and '|novice|' or '|') .. table.concat(parts, ',')
end

-- Walk several sorted sets as one, lowest score first (ties by member, as Redis
-- orders them), between min and max; return the first member `fits` accepts.
local function walk(keys, min, max, fits)
  local bufs, pos, offs = {}, {}, {}
  local function fill(i)
    bufs[i] = redis.call('ZRANGEBYSCORE', keys[i], min, max, 'WITHSCORES', 'LIMIT', offs[i], WALK_CHUNK)
    pos[i] = 1
    offs[i] = offs[i] + WALK_CHUNK
  end
  for i = 1, #keys do
    offs[i] = 0
    fill(i)
  end
  for _ = 1, WALK_LIMIT do
    local best, bs, bm = nil, nil, nil
    for i = 1, #keys do
      if pos[i] > #bufs[i] and #bufs[i] == 2 * WALK_CHUNK then
        fill(i)
      end
      if pos[i] <= #bufs[i] then
        local m, s = bufs[i][pos[i]], tonumber(bufs[i][pos[i] + 1])
        if best == nil or s < bs or (s == bs and m < bm) then
          best, bs, bm = i, s, m
        end
      end
    end
    if best == nil then
      return nil
    end
    pos[best] = pos[best] + 2
    if fits(bm) then
      return bm
    end
  end
  return nil
end

-- Uniform over the union of the sets (weighted: accepted with chance weight / max
-- weight, which keeps the draw exactly proportional); nil after RANDOM_TRIES misses.
local function sample(q, keys, cards, fits, weighted)
  local total = 0
  for i = 1, #keys do
    total = total + cards[i]
  end
  if total == 0 then
    return nil
  end
  local wmax = 1
  if weighted then
    wmax = math.max(1, n(redis.call('HGET', key(K_QUEUE, q), 'wmax')))
  end
  for _ = 1, RANDOM_TRIES do
    local r = math.floor(rand() * total)
    local i = 1
    while r >= cards[i] do
      r = r - cards[i]
      i = i + 1
    end
    local id = redis.call('ZRANGE', keys[i], r, r)[1]
    if id and fits(id) then
      if not weighted then
        return id
      end
      if rand() * wmax < n(redis.call('HGET', key(K_PROFILE, id), 'weight')) then
        return id
      end
    end
  end
  return nil
end

local function pick(strategy, q, keys, cards, fits)
  if strategy == 'ring_all' then
    local all = {}
    walk(keys, '-inf', '+inf', function(id)
      if fits(id) then
        all[#all + 1] = id
      end
      return #all >= RING_ALL_MAX
    end)
    if #all == 0 then
      return nil
    end
    return all
  end
  local id = nil
  if strategy == 'round_robin' then
    local last = redis.call('HGET', key(K_QUEUE, q), 'rr_last')
    if last then
      id = walk(keys, '(' .. last, '+inf', fits) or walk(keys, '-inf', last, fits)
      return id and {id} or nil
    end
  elseif strategy == 'random' or strategy == 'weighted_random' then
    id = sample(q, keys, cards, fits, strategy == 'weighted_random')
  end
  id = id or walk(keys, '-inf', '+inf', fits)
  return id and {id} or nil
end

-- The index families a call of this channel draws from (see modes_of in lib.lua).
local function bases_for(channel, q)
  if channel == 'voice' then
    return {avail_key('voice', q)}
  end
  return {avail_key('voice', q), avail_key(channel, q)}
end

-- The agents for a requirement: walk the index of the scarcest required skill (its
-- levels at or above the minimum), check the other skills on each candidate.
-- Set sizes are read only when needed (several skills to choose from, a random draw,
-- novices first); an ordered walk over one skill just reads each level's head.
local function find(q, cfg, channel, req, simple)
  local bases = bases_for(channel, q)
  local strategy = cfg.strategy
  local drawn = strategy == 'random' or strategy == 'weighted_random'
  local names = {}
  for skill, _ in pairs(req) do
    names[#names + 1] = skill
  end
  table.sort(names)
  local counted = drawn or simple or #names > 1
  -- per skill: its levels at or above the minimum, each a list of {key, size}
  local primary, best, levels = nil, nil, nil
  for _, skill in ipairs(names) do
    local total, found = 0, {}
    for l = req[skill], PROFICIENCY_MAX do
      local group = {}
      for _, base in ipairs(bases) do
        local k = base .. ':' .. skill .. ':' .. l
        if counted then
          local size = redis.call('ZCARD', k)
          if size > 0 then
            group[#group + 1] = {k, size}
            total = total + size
          end
        else
          group[#group + 1] = {k, 0}
          total = 1
        end
      end
      if #group > 0 then
        found[#found + 1] = group
      end
    end
    if total == 0 then
      return nil
    end
    if best == nil or total < best then
      primary, best, levels = skill, total, found
    end
  end
  -- groups of {keys, sizes}, tried in turn: one group, or one per level for novices
  local groups = {}
  if primary == nil then
    local keys, sizes = {}, {}
    for _, base in ipairs(bases) do
      keys[#keys + 1] = base
      sizes[#sizes + 1] = drawn and redis.call('ZCARD', base) or 0
    end
    groups[1] = {keys, sizes}
  else
    local keys, sizes = {}, {}
    for _, group in ipairs(levels) do
      if simple then
        keys, sizes = {}, {}
      end
      for _, ks in ipairs(group) do
        keys[#keys + 1], sizes[#sizes + 1] = ks[1], ks[2]
      end
      if simple then
        groups[#groups + 1] = {keys, sizes}
      end
    end
    if not simple then
      groups[1] = {keys, sizes}
    end
  end
  -- what to check on each candidate: the other skills, and for a chat or SMS drawn
  -- from the voice family, that the agent takes that channel at all
  local fields, mins = {}, {}
  for _, skill in ipairs(names) do
    if skill ~= primary then
      fields[#fields + 1] = 'sk:' .. skill
      mins[#mins + 1] = req[skill]
    end
  end
  local cap = channel ~= 'voice' and ('cap:' .. channel) or nil
  local function fits(id)
    if cap and n(redis.call('HGET', key(K_AGENT, id), cap)) < 1 then
      return false
    end
    if #fields == 0 then
      return true
    end
    local have = redis.call('HMGET', key(K_PROFILE, id), unpack(fields))
    for i = 1, #fields do
      if n(have[i]) < mins[i] then
        return false
      end
    end
    return true
  end
  for _, group in ipairs(groups) do
    local agents = pick(strategy, q, group[1], group[2], fits)
    if agents then
      return agents
    end
  end
  return nil
end

-- The preferred agent, if free for this channel now.
local function preferred_free(aid, channel, q)
  if channel == 'voice' then
    return redis.call('ZSCORE', avail_key('voice', q), aid) ~= false
  end
  if redis.call('ZSCORE', avail_key(channel, q), aid) then
    return true
  end
  return redis.call('ZSCORE', avail_key('voice', q), aid) ~= false
    and n(redis.call('HGET', key(K_AGENT, aid), 'cap:' .. channel)) > 0
end

-- Offer the call to these agents and reserve them. Nil when the call turns out not to
-- be waiting any more (its hash expired after a day): then it leaves the line.
local function offer(cid, q, cfg, channel, agents)
  local ck = key(K_CALL, cid)
  local f = redis.call('HMGET', ck, 'state', 'kind', 'callback', 'attempts')
  if f[1] ~= 'waiting' then
    leave_line(cid, q)
    delist(cid, q)
    return nil
  end
  local deadline = num(NOW + cfg.ring_timeout_seconds * 1000 + OFFER_GRACE_MS)
  local list = table.concat(agents, ',')
  local attempt = tostring(n(f[4]) + 1)
  redis.call('HSET', ck, 'state', 'offered', 'agents', list, 'offered_at', num(NOW),
    'deadline', deadline, 'attempts', attempt)
  leave_line(cid, q)
  redis.call('ZADD', key(K_OFFERS), deadline, cid)
  emit('offer', {'call', cid, 'queue', q, 'agent', list, 'channel', channel, 'kind', f[2], 'attempt', attempt})
  for _, aid in ipairs(agents) do
    take(aid, channel, cid)
  end
  if cfg.strategy == 'round_robin' then
    redis.call('HSET', key(K_QUEUE, q), 'rr_last', redis.call('ZSCORE', key(K_MEMBERS, q), agents[1]))
  end
  local out = {cid, q, f[2], channel, deadline, f[3] or '', attempt}
  for _, aid in ipairs(agents) do
    out[#out + 1] = aid
  end
  return out
end

-- desc: the call's line in the queue's REQS hash (see enlist in lib.lua)
local function try_call(q, cfg, cid, desc, memo)
  if not desc then
    leave_line(cid, q)
    return nil
  end
  local channel, queued, pref, pref_until, simple, skills =
    string.match(desc, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
  if pref ~= '' and NOW < n(pref_until) then
    -- still within its wait for the preferred agent: that agent or nobody
    if preferred_free(pref, channel, q) then
      return offer(cid, q, cfg, channel, {pref})
    end
    return nil
  end
  local req = requirement(cfg, cjson.decode(skills), NOW - n(queued))
  local novice = cfg.prefer_novice and simple == '1'
  local mk = memo_key(channel, req, novice)
  if memo[mk] then
    return nil
  end
  local agents = find(q, cfg, channel, req, novice)
  if not agents then
    memo[mk] = true
    return nil
  end
  return offer(cid, q, cfg, channel, agents)
end

local function anyone_free(q)
  for _, c in ipairs(CHANNELS) do
    if redis.call('ZCARD', avail_key(c, q)) > 0 then
      return true
    end
  end
  return false
end

local function decide(q, cfg, memo)
  local wk, rk = key(K_WAITING, q), key(K_REQS, q)
  local start, chunk = 0, CALL_SCAN_HEAD
  while start < CALL_SCAN_LIMIT do
    local batch = redis.call('ZRANGE', wk, start, start + chunk - 1)
    if #batch == 0 then
      return nil
    end
    local descs = redis.call('HMGET', rk, unpack(batch))
    for i, cid in ipairs(batch) do
      local made = try_call(q, cfg, cid, descs[i], memo)
      if made then
        return made
      end
    end
    if #batch < chunk then
      return nil
    end
    start = start + chunk
    chunk = CALL_SCAN_CHUNK
  end
  return nil
end

local most = tonumber(ARGV[5])
local queues = {}
for i = 6, #ARGV do
  queues[#queues + 1] = ARGV[i]
end
if #queues == 0 then
  queues = redis.call('ZREVRANGE', key(K_QUEUES), 0, -1)
elseif #queues > 1 then
  local priority = {}
  for _, q in ipairs(queues) do
    priority[q] = n(redis.call('ZSCORE', key(K_QUEUES), q))
  end
  table.sort(queues, function(x, y)
    if priority[x] ~= priority[y] then
      return priority[x] > priority[y]
    end
    return x < y
  end)
end
for _, q in ipairs(queues) do
  if redis.call('HEXISTS', key(K_QUEUE, q), 'cfg') == 0 then
    return fail('unknown-queue', q)
  end
end
local out = {'OK'}
for _, q in ipairs(queues) do
  -- a queue nobody is free for costs a read or three, however many wait in it
  local cfg, memo = nil, {}
  while #out - 1 < most and anyone_free(q) do
    cfg = cfg or queue_cfg(q)
    local made = decide(q, cfg, memo)
    if not made then
      break
    end
    out[#out + 1] = made
  end
  if #out - 1 >= most then
    break
  end
end
return out
