"""Every Lua script the farm runs in Redis, in one place (each is one atomic step).

Registered through farm.store.redis.Connection.script; KEYS and ARGV as each comment says.
"""

#: Take a lease: KEYS[1] the lease, ARGV[1] the token, ARGV[2] its TTL in ms; with
#: KEYS[2], ARGV[3] is added to that set in the same step (a run joins the running set
#: as its lease is taken). 1 when the token holds it now (also for a retried call that
#: got it the first time), 0 when another token does.
ACQUIRE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return 1 end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if KEYS[2] then redis.call('sadd', KEYS[2], ARGV[3]) end
  return 1
end
return 0
"""

#: Extend a lease: KEYS[1] the lease, ARGV[1] the token, ARGV[2] the TTL in ms; only
#: while that token holds it (1), else 0.
RENEW_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

#: Let a lease go: KEYS[1] the lease, ARGV[1] the token; only while that token holds it.
RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

#: A trial's state: KEYS[1] the sweep's plan hash, KEYS[2] its trials hash, ARGV[1] the
#: trial's index, ARGV[2] its state alone (where the sweep has a plan hash), ARGV[3] the
#: whole trial (a sweep stored before plan hashes existed).
SAVE_TRIAL = """
if redis.call('exists', KEYS[1]) == 1 then
  return redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
end
return redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
"""

#: The board's runs list in one command: KEYS in fours per run (doc, best, newest
#: evaluation, live hash), ARGV the live fields wanted; a flat list, per run: the three
#: documents then the live fields.
BOARD_ROWS = """
local out = {}
for i = 1, #KEYS, 4 do
  out[#out + 1] = redis.call('GET', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1])
  out[#out + 1] = redis.call('GET', KEYS[i + 2])
  local live = redis.call('HMGET', KEYS[i + 3], unpack(ARGV))
  for j = 1, #ARGV do out[#out + 1] = live[j] end
end
return out
"""

#: Record an evaluation: KEYS[1] the run's evaluations hash, KEYS[2] its best, KEYS[3]
#: its newest evaluation; ARGV[1] the iteration, ARGV[2] the evaluation's JSON, ARGV[3]
#: its score ('' never best), ARGV[4] the JSON kept as best (with the score). 1 when it
#: is the best now: a higher score, or the same at a later iteration (darknet's `>=`).
RECORD_EVALUATION = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local newest = redis.call('GET', KEYS[3])
if not newest or tonumber(cjson.decode(newest).iteration) <= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], ARGV[2])
end
if ARGV[3] == '' then return 0 end
local current = redis.call('GET', KEYS[2])
if current then
  local best = cjson.decode(current)
  local score, it = tonumber(ARGV[3]), tonumber(ARGV[1])
  local held = tonumber(best.score) or -1
  if score < held or (score == held and it <= tonumber(best.iteration)) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""
