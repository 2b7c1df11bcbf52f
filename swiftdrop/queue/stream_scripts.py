"""The stream queue's steps, each one Lua script, so that each is atomic in Redis.

A claim that takes an entry, a finish that checks its holder and acts, a
replay that adds the new entry and drops the dead letter: none of them can
interleave with another's, so two workers never take one entry and a holder
whose lease was taken over cannot finish. Leases and not-before times count
in Redis's clock (``TIME``), not the workers'.
"""

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: stream, leases, retry, attempts. ARGV: group, consumer, lease (ms).
CLAIM = NOW + """
local id, source
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
if #due > 0 then
  id, source = due[1], 'retry'
  redis.call('ZREM', KEYS[3], id)
else
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
  if #expired > 0 then id, source = expired[1], 'recovered' end
end
local entry
if id then
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if #claimed == 0 or not claimed[1] then
    redis.call('ZREM', KEYS[2], id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    return {'gone', id}
  end
  entry = claimed[1]
else
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                          'STREAMS', KEYS[1], '>')
  if not read then return false end
  entry = read[1][2][1]
  source = 'new'
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), entry[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
return {source, entry[1], pending[1][4], redis.call('HGET', KEYS[4], entry[1]) or '0', entry[2]}
"""
HOLDER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  return false
end
"""
# KEYS: stream, leases. ARGV: group, consumer, id, lease (ms). The delivery count, or nil.
REFRESH = NOW + HOLDER + """
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[3])
return p[1][4]
"""
# KEYS: stream, leases, retry, attempts, failed, counts.
# ARGV: group, consumer, id, state, retry delay (ms), attempts, dead letter (JSON), size.
FINISH = NOW + HOLDER + """
redis.call('ZREM', KEYS[2], ARGV[3])
if ARGV[4] == 'retry' then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[6])
  return 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
if ARGV[4] == 'failed' then redis.call('HSET', KEYS[5], ARGV[3], ARGV[7]) end
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('HINCRBY', KEYS[6], ARGV[4] .. '_bytes', ARGV[8])
return 1
"""
# KEYS: stream, failed, attempts. ARGV: id, group, replayed, prior deliveries, then the
# fields of a replay to drop. The new entry's id, or nil when the dead letter is gone.
REPLAY = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 or redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return false end
redis.call('HDEL', KEYS[3], ARGV[1])
local drop, fields = {}, {}
for i = 5, #ARGV do drop[ARGV[i]] = true end
local old = e[1][2]
for i = 1, #old, 2 do
  if not drop[old[i]] then
    fields[#fields + 1] = old[i]
    fields[#fields + 1] = old[i + 1]
  end
end
for _, v in ipairs({'replay_of', ARGV[1], 'for_group', ARGV[2], 'replayed', ARGV[3],
                    'prior_deliveries', ARGV[4]}) do fields[#fields + 1] = v end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
"""
# KEYS: stream, leases, retry. Expired leases -> due retries: (ids), without an attempt.
RECOVER = NOW + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now, id)
end
return expired
"""
