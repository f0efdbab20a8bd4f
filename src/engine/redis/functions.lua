#!lua name=herald
--[[
Herald's Redis function library: the one atomic publish path, used by the
gateway (POST /v1/publish) and by backends (FCALL herald_publish) alike.

Loaded by every gateway at start with FUNCTION LOAD REPLACE. The {{...}}
placeholders are filled from the gateway's config (history and size limits),
so a backend's FCALL obeys the same rules as an HTTP publish.

Keys: every key of one user shares the hash tag {u:<user>}, so all of them
live in one cluster slot and each call is atomic. KEYS[1] is the user's base
name, which is also their pub/sub channel:

  herald:{u:<user>}            channel   live entries: "n <id> <unread> <json>"
  herald:{u:<user>}:inbox      stream    the notifications; field `n` = JSON
  herald:{u:<user>}:read       set       ids of read entries still in the inbox
  herald:{u:<user>}:clicked    set       ids of clicked entries still in the inbox
  herald:{u:<user>}:trimmed    string    newest id removed by trimming; a
                                         cursor before it gets `reset`
  herald:{u:<user>}:idem:<k>   string    "<id> <subscribers>" of the first publish
                                         with idempotency key <k>; expires

The unread count is XLEN(inbox) - SCARD(read): both sets only ever hold ids
that are still in the inbox (trimming removes them), so the count is exact
and needs no counter that could drift.
]]

local VERSION = '{{VERSION}}'
local MAX_LEN = {{MAX_LEN}}
local MAX_AGE_MS = {{MAX_AGE_MS}}
local MAX_PAYLOAD = {{MAX_PAYLOAD}}
local MAX_TITLE = {{MAX_TITLE}}
local MAX_BODY = {{MAX_BODY}}
local IDEM_TTL_MS = {{IDEM_TTL_MS}}
local MAX_TYPE = 64
local MAX_URL = 2048
-- Most entries one call trims (a lowered max_len is caught up over calls).
local TRIM_BATCH = 1000

local FIELDS = {type = true, title = true, body = true, url = true, icon = true, priority = true, data = true}
local PRIORITIES = {low = true, normal = true, high = true}

local function invalid(message)
  return redis.error_reply('HERALD_INVALID ' .. message)
end

-- Characters, not bytes: counts the bytes that start a UTF-8 sequence.
local function chars(s)
  local _, n = string.gsub(s, '[^\128-\191]', '')
  return n
end

-- Same rules as UserId::parse: 1-128 bytes, no braces, spaces or controls.
local function user_base(keys)
  local base = keys[1]
  if type(base) ~= 'string' or #base > 128 + 11 or not string.match(base, '^herald:{u:[^{}%s%c]+}$') then
    return nil
  end
  return base
end

-- Strips surrounding whitespace in linear time (a `^%s*(.-)%s*$` pattern
-- backtracks quadratically on long runs of spaces).
local function strip(s)
  local first = string.find(s, '%S')
  if not first then return '' end
  local last = #s
  while string.find(string.sub(s, last, last), '%s') do last = last - 1 end
  return string.sub(s, first, last)
end

local function valid_type(t)
  if #t == 0 or #t > MAX_TYPE then return false end
  for part in string.gmatch(t .. '.', '([^.]*)%.') do
    if not string.match(part, '^[a-z0-9_%-]+$') then return false end
  end
  return true
end

local function absent(v)
  return v == nil or v == cjson.null
end

-- Returns the JSON to store, or nil and an error reply. Same rules as
-- NewNotification::validate on the HTTP path.
local function validate(json)
  if #json > MAX_PAYLOAD then
    return nil, redis.error_reply('HERALD_TOO_LARGE notification is ' .. #json .. ' bytes, over the limit of ' .. MAX_PAYLOAD)
  end
  -- Raw newlines can only be whitespace between JSON tokens, and an SSE
  -- data line must not hold one.
  json = strip((string.gsub(json, '[\r\n]', ' ')))
  if string.sub(json, 1, 1) ~= '{' then return nil, invalid('notification must be a JSON object') end
  local ok, n = pcall(cjson.decode, json)
  if not ok or type(n) ~= 'table' then return nil, invalid('notification is not valid JSON') end
  for k in pairs(n) do
    if not FIELDS[k] then return nil, invalid('notification.' .. tostring(k) .. ': unknown field') end
  end
  if type(n.type) ~= 'string' or not valid_type(n.type) then
    return nil, invalid('notification.type: must be 1-' .. MAX_TYPE .. ' characters of a-z 0-9 _ - in dot-separated parts, like `comment.mention`')
  end
  if type(n.title) ~= 'string' or chars(n.title) == 0 or chars(n.title) > MAX_TITLE then
    return nil, invalid('notification.title: must be 1-' .. MAX_TITLE .. ' characters')
  end
  if not absent(n.body) and (type(n.body) ~= 'string' or chars(n.body) > MAX_BODY) then
    return nil, invalid('notification.body: must be at most ' .. MAX_BODY .. ' characters')
  end
  for _, f in ipairs({'url', 'icon'}) do
    if not absent(n[f]) and (type(n[f]) ~= 'string' or #n[f] > MAX_URL) then
      return nil, invalid('notification.' .. f .. ': must be a string of at most ' .. MAX_URL .. ' bytes')
    end
  end
  if n.priority == nil then
    json = '{"priority":"normal",' .. string.sub(json, 2)
  elseif not PRIORITIES[n.priority] then
    return nil, invalid('notification.priority: must be low, normal or high')
  end
  return json
end

local function split_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_before(a, b)
  local ams, aseq = split_id(a)
  local bms, bseq = split_id(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

local function forget(base, id)
  redis.call('SREM', base .. ':read', id)
  redis.call('SREM', base .. ':clicked', id)
end

-- Trims the inbox to MAX_LEN entries and MAX_AGE_MS, keeping the read and
-- clicked sets and the trimmed watermark in step.
local function trim(base, inbox, now_ms)
  local newest_trimmed
  local len = redis.call('XLEN', inbox)
  local excess = math.min(len - MAX_LEN, TRIM_BATCH)
  if excess > 0 then
    local old = redis.call('XRANGE', inbox, '-', '+', 'COUNT', excess)
    for _, e in ipairs(old) do
      forget(base, e[1])
      newest_trimmed = e[1]
    end
    redis.call('XTRIM', inbox, 'MAXLEN', len - #old)
  end
  local cutoff = now_ms - MAX_AGE_MS
  if cutoff > 0 then
    local aged = redis.call('XRANGE', inbox, '-', '(' .. cutoff .. '-0', 'COUNT', TRIM_BATCH)
    for _, e in ipairs(aged) do
      forget(base, e[1])
      redis.call('XDEL', inbox, e[1])
      newest_trimmed = e[1]
    end
  end
  if newest_trimmed then
    redis.call('SET', base .. ':trimmed', newest_trimmed)
  end
end

local function unread_count(base)
  return redis.call('XLEN', base .. ':inbox') - redis.call('SCARD', base .. ':read')
end

-- Returns {id, subscribers, duplicate (0/1)} or an error reply.
local function publish(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local json, err = validate(args[1] or '')
  if not json then return err end
  local idem
  if args[2] and args[2] ~= '' then
    if #args[2] > 200 or string.find(args[2], '[^\33-\126]') then
      return invalid('idempotency_key: must be 1 to 200 visible ASCII characters')
    end
    idem = base .. ':idem:' .. args[2]
    local first = redis.call('GET', idem)
    if first then
      local id, subscribers = string.match(first, '^(%S+) (%d+)$')
      return {id, tonumber(subscribers), 1}
    end
  end
  local inbox = base .. ':inbox'
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local id = redis.call('XADD', inbox, '*', 'n', json)
  trim(base, inbox, now_ms)
  local subscribers = redis.call('PUBLISH', base, 'n ' .. id .. ' ' .. unread_count(base) .. ' ' .. json)
  if idem then
    redis.call('SET', idem, id .. ' ' .. subscribers, 'PX', IDEM_TTL_MS)
  end
  return {id, subscribers, 0}
end

-- FCALL herald_publish 1 herald:{u:<user>} '<notification json>' [<idempotency key>]
-- The backends' entry point: returns the entry id.
redis.register_function('herald_publish', function(keys, args)
  local result = publish(keys, args)
  if type(result) == 'table' and result[1] then return result[1] end
  return result
end)

-- The gateway's entry point: {id, subscribers, duplicate}.
redis.register_function('herald_publish_detail', publish)

-- FCALL_RO herald_read_page 1 <base> <after id> <count>
-- Returns {reset (0/1), {{id, json, read (0/1), clicked (0/1)}, ...}}.
redis.register_function{function_name = 'herald_read_page', flags = {'no-writes'}, callback = function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local after = args[1]
  if not split_id(after) then return invalid('cursor must be <ms>-<seq>') end
  local count = tonumber(args[2]) or 100
  local start = '(' .. after
  local reset = 0
  local trimmed = redis.call('GET', base .. ':trimmed')
  if trimmed and id_before(after, trimmed) then
    reset = 1
    start = '-'
  end
  local page = {}
  for _, e in ipairs(redis.call('XRANGE', base .. ':inbox', start, '+', 'COUNT', count)) do
    local id = e[1]
    page[#page + 1] = {id, e[2][2], redis.call('SISMEMBER', base .. ':read', id), redis.call('SISMEMBER', base .. ':clicked', id)}
  end
  return {reset, page}
end}

-- FCALL_RO herald_stream_start 1 <base>: {newest id ever given, unread count}.
redis.register_function{function_name = 'herald_stream_start', flags = {'no-writes'}, callback = function(keys)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local inbox = base .. ':inbox'
  local last = '0-0'
  if redis.call('EXISTS', inbox) == 1 then
    local info = redis.call('XINFO', 'STREAM', inbox)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then last = info[i + 1] end
    end
  end
  return {last, unread_count(base)}
end}

-- FCALL_RO herald_version 0: proves the library is loaded, and which config.
redis.register_function{function_name = 'herald_version', flags = {'no-writes'}, callback = function()
  return VERSION
end}
