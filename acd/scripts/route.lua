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
      if rand() * wmax < n(redis.call('HGET', key(K_AGENT, id), 'weight')) then
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

-- The agents for a requirement: walk the index of the scarcest required skill (its
-- levels at or above the minimum), check the other skills on each candidate.
local function find(q, cfg, base, req, simple)
  local primary, best, levels = nil, nil, nil
  for skill, level in pairs(req) do
    local total, found = 0, {}
    for l = level, PROFICIENCY_MAX do
      local k = base .. ':' .. skill .. ':' .. l
      local card = redis.call('ZCARD', k)
      if card > 0 then
        found[#found + 1] = {k, card}
        total = total + card
      end
    end
    if total == 0 then
      return nil
    end
    if best == nil or total < best or (total == best and skill < primary) then
      primary, best, levels = skill, total, found
    end
  end
  local groups = {}
  if primary == nil then
    groups[1] = {{base}, {redis.call('ZCARD', base)}}
  elseif simple then
    for i, kc in ipairs(levels) do
      groups[i] = {{kc[1]}, {kc[2]}}
    end
  else
    local keys, cards = {}, {}
    for i, kc in ipairs(levels) do
      keys[i], cards[i] = kc[1], kc[2]
    end
    groups[1] = {keys, cards}
  end
  local fields, mins = {}, {}
  for skill, level in pairs(req) do
    if skill ~= primary then
      fields[#fields + 1] = 'sk:' .. skill
      mins[#mins + 1] = level
    end
  end
  local function fits(id)
    if #fields == 0 then
      return true
    end
    local have = redis.call('HMGET', key(K_AGENT, id), unpack(fields))
    for i = 1, #fields do
      if n(have[i]) < mins[i] then
        return false
      end
    end
    return true
  end
  for _, group in ipairs(groups) do
    local agents = pick(cfg.strategy, q, group[1], group[2], fits)
    if agents then
      return agents
    end
  end
  return nil
end

local function offer(cid, q, cfg, channel, agents)
  local ck = key(K_CALL, cid)
  local deadline = num(NOW + cfg.ring_timeout_seconds * 1000 + OFFER_GRACE_MS)
  local list = table.concat(agents, ',')
  redis.call('HSET', ck, 'state', 'offered', 'agents', list, 'offered_at', num(NOW), 'deadline', deadline)
  local attempt = redis.call('HINCRBY', ck, 'attempts', 1)
  leave_line(cid, q)
  redis.call('ZADD', key(K_OFFERS), deadline, cid)
  local f = redis.call('HMGET', ck, 'kind', 'callback')
  emit('offer', {'call', cid, 'queue', q, 'agent', list, 'channel', channel, 'kind', f[1], 'attempt', attempt})
  for _, aid in ipairs(agents) do
    take(aid, channel, cid)
  end
  if cfg.strategy == 'round_robin' then
    redis.call('HSET', key(K_QUEUE, q), 'rr_last', redis.call('ZSCORE', key(K_MEMBERS, q), agents[1]))
  end
  local out = {cid, q, f[1], channel, deadline, f[2] or '', tostring(attempt)}
  for _, aid in ipairs(agents) do
    out[#out + 1] = aid
  end
  return out
end

local function try_call(q, cfg, cid, memo)
  local f = redis.call('HMGET', key(K_CALL, cid), 'state', 'channel', 'skills', 'queued', 'pref', 'pref_until', 'simple')
  if f[1] ~= 'waiting' then
    -- its hash expired (a call forgotten for a day): nothing to offer, clear the line
    leave_line(cid, q)
    return nil
  end
  local channel = f[2]
  local base = avail_key(channel, q)
  if f[5] ~= '' and NOW < n(f[6]) then
    -- still within its wait for the preferred agent: that agent or nobody
    if redis.call('ZSCORE', base, f[5]) then
      return offer(cid, q, cfg, channel, {f[5]})
    end
    return nil
  end
  local req = requirement(cfg, cjson.decode(f[3]), NOW - n(f[4]))
  local simple = cfg.prefer_novice and f[7] == '1'
  local mk = memo_key(channel, req, simple)
  if memo[mk] then
    return nil
  end
  local agents = find(q, cfg, base, req, simple)
  if not agents then
    memo[mk] = true
    return nil
  end
  return offer(cid, q, cfg, channel, agents)
end

local function decide(q, cfg, memo)
  local any = false
  for _, c in ipairs(CHANNELS) do
    if redis.call('ZCARD', avail_key(c, q)) > 0 then
      any = true
      break
    end
  end
  if not any then
    return nil
  end
  local wk = key(K_WAITING, q)
  local start = 0
  while start < CALL_SCAN_LIMIT do
    local batch = redis.call('ZRANGE', wk, start, start + CALL_SCAN_CHUNK - 1)
    for _, cid in ipairs(batch) do
      local made = try_call(q, cfg, cid, memo)
      if made then
        return made
      end
    end
    if #batch < CALL_SCAN_CHUNK then
      return nil
    end
    start = start + CALL_SCAN_CHUNK
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
else
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
local cfgs = {}
for _, q in ipairs(queues) do
  cfgs[q] = queue_cfg(q)
  if not cfgs[q] then
    return fail('unknown-queue', q)
  end
end
local out = {'OK'}
for _, q in ipairs(queues) do
  local cfg = cfgs[q]
  local memo = {}
  while #out - 1 < most do
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
