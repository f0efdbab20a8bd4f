#!lua name=floor
--[[
What parts of a publish cost Redis, for `bench/run.sh redis-cost` with
FLOOR=1: functions that do a growing part of herald_publish's work with the
same arguments, so that redis-server's CPU per call shows where the
function's cost over a bare XADD comes from. Not used by Herald.
]]

-- An FCALL that does nothing: the price of calling a function at all.
redis.register_function('bare_publish', function()
  return 1
end)

-- Only the append.
redis.register_function('append_publish', function(keys, args)
  return redis.call('XADD', keys[1] .. ':inbox', '*', 'n', args[1])
end)

-- The append and the live event.
redis.register_function('fanout_publish', function(keys, args)
  local id = redis.call('XADD', keys[1] .. ':inbox', '*', 'n', args[1])
  redis.call('PUBLISH', keys[1], 'n ' .. id .. ' 1 ' .. args[1])
  return id
end)

-- The calls every publish makes (decode, the preferences' HMGET, XADD, XLEN,
-- PUBLISH), without the field checks, the read set or trimming.
redis.register_function('core_publish', function(keys, args)
  local ok, n = pcall(cjson.decode, args[1])
  if not ok then return redis.error_reply('not JSON') end
  local settings = redis.call('HMGET', keys[1] .. ':in_app', string.match(n.type, '^[^.]+'), '*', '~oldest_ms')
  if (settings[1] or settings[2]) == '0' then return false end
  local id = redis.call('XADD', keys[1] .. ':inbox', '*', 'n', args[1])
  local len = redis.call('XLEN', keys[1] .. ':inbox')
  redis.call('PUBLISH', keys[1], 'n ' .. id .. ' ' .. len .. ' ' .. args[1])
  return id
end)
