"""Automatic call distribution in Redis: agents, queues, offers.

`acd.services.AcdService` is the door every process uses. The state, all in Redis under
one hash tag per ACD (`acd.keys`):

- agent hash (status, presence, load and offers per channel, idle-since, today's calls
  and talk time, wrap-up end, the index entries it holds) + profile hash (skill levels,
  weight, contact) + the set of calls it holds;
- queue hash (routing JSON, strategy, round-robin memory, indexed skills), its members
  (agent -> position), its line (call -> priority x 2^38 + arrival), the routing line of
  each call in it (one string), join times, counters;
- the candidate index: sorted sets of free agents per mode (voice / chat / sms), queue,
  and skill level, scored by the queue's strategy;
- call hash (queue, channel, priority, skills, state, offer, times); offers, wrap-ups and
  max waits as sorted sets of deadlines, swept by any process (`AcdService.tick`);
- one event stream (`acd.events`).

Every change is one Lua script (`acd/scripts/*.lua`, loaded by `acd.lua`), so reserving
an agent and offering them a call happen together or not at all, and nothing a crashed
process was doing is left half-done: its offers simply expire.
"""
