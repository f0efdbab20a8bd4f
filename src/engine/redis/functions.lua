#!lua name=herald
--[[
Herald's Redis function library: the one atomic publish path, used by the
gateway (POST /v1/publish) and by backends (FCALL herald_publish) alike.

Loaded by the gateways (src/engine/redis/library.rs has the rule: a gateway
never replaces a library of a higher revision with its own). Every change to
this file needs a new LIBRARY_REVISION in src/engine/redis/mod.rs. The {{...}}
placeholders are filled from the gateway's config (history and size limits),
so a backend's FCALL obeys the same rules as an HTTP publish.

Keys: every key of one user shares the hash tag {u:<user>}, so all of them
live in one cluster slot and each call is atomic. KEYS[1] is the user's base
name, which is also their pub/sub channel:

  herald:{u:<user>}            channel   live events, "<kind> <id or -> <unread> <json>":
                                         n = notification, r = read, d = deleted
  herald:{u:<user>}:inbox      stream    the notifications; field `n` = JSON
  herald:{u:<user>}:read       set       ids of read entries still in the inbox,
                                         newer than `~read_upto`
  herald:{u:<user>}:clicked    set       ids of clicked entries still in the inbox
  herald:{u:<user>}:trimmed    string    newest id removed by trimming; a
                                         cursor before it gets `reset`
  herald:{u:<user>}:idem:<k>   string    "<id> <subscribers>" of the first publish
                                         with idempotency key <k>; expires
  herald:{u:<user>}:prefs      string    the preferences document (JSON)
  herald:{u:<user>}:push       hash      endpoint -> "<seq> <subscription JSON>":
                                         the user's devices for Web Push; `~seq`
                                         (no endpoint starts with `~`) numbers
                                         them, so the oldest is known
  herald:{u:<user>}:in_app     hash      category -> 1/0 (`*` = default): whether
                                         notifications are kept, from the prefs;
                                         ^category -> 1/0 (`^*` = default): whether
                                         they are pushed; `~quiet`: the quiet
                                         hours as a rule this file can apply
                                         (in_quiet_hours); and the inbox's
                                         state, in fields that start with `~`
                                         (category names cannot):
                                           ~oldest_ms   the oldest entry's time (ms)
                                                        at the last age check
                                           ~read_upto   every entry at or before
                                                        this id is read
                                           ~covered     entries in the inbox at or
                                                        before ~read_upto
                                           ~expires_ms  when every key of the user
                                                        expires (below)

Web Push keys are the node's, not a user's; they share the hash tag {push}:

  herald:{push}:queue          stream    pushes to send now, fields u (user), id,
                                         a (attempts so far), c (1: only if still
                                         unread), e (one endpoint, or empty: every
                                         device); consumer group `herald-push`
  herald:{push}:delayed        zset      pushes to send later, scored by when (ms):
                                         `unread_after` pushes and retries; member
                                         "<user>\t<id>\t<a>\t<c>\t<e>"
  herald:{push}:dead           stream    pushes given up on (u, id, e, a, why),
                                         the newest PUSH_DEAD_KEPT

herald_publish writes the queue keys without naming them in KEYS (its
signature has one key, the user's). That holds on one Redis server; on a
cluster they live in another slot.

An entry is read if its id is at or before `~read_upto` (set by mark-all-read)
or in `read`. The unread count is XLEN(inbox) - SCARD(read) - ~covered: `read`
holds only ids newer than `~read_upto` that are still in the inbox, and every
removal (trim, delete) takes its ids out of `read` or out of `~covered`, so
the count is exact. Mark-all-read moves the watermark and empties `read`:
its cost does not grow with the inbox. Clicked implies read.

Every key of a user expires at `~expires_ms`, MAX_AGE_MS plus twice the age
slack after the user was last active (a publish to them, kept or dropped by
preferences, a stream opened, new preferences), so a user who never comes
back leaves nothing behind; by then every entry has aged out anyway. The
instant moves at most once per age slack (renew_if_due): a busy user's
publishes pay no extra call for it. All keys share the one instant, so one
never outlives another (Redis freezes time during a call: a function sees
all of them or none). A key made later (`read` by a mark, `trimmed` by a
trim) takes the same instant. Ids stay in order across an expiry: a new
inbox's first id comes from the clock, more than MAX_AGE_MS past every id
the old one gave; should the clock have stepped back that far, a client's
cursor is ahead of the new inbox and it gets `reset` (cursor_ahead).

History is trimmed in batches (LEN_SLACK, AGE_SLACK_MS below), by the same
rule on every path, so the count is taken over what the inbox holds.

`~oldest_ms` lets a publish skip the age trim's range scan until the oldest
entry may be past the age and its slack: the in_app hash is read on every
publish anyway, so the field costs no extra call. It may be early (entries
removed since it was set only make the oldest younger; a missing field
means "check now"), never late: it is set right after an age check, from
the oldest entry then kept. New preferences keep the `~` fields. So every
user who has received a notification has an in_app hash, preferences or
not.
]]

local VERSION = '{{VERSION}}'
local MAX_LEN = {{MAX_LEN}}
local MAX_AGE_MS = {{MAX_AGE_MS}}
local MAX_PAYLOAD = {{MAX_PAYLOAD}}
local MAX_TITLE = {{MAX_TITLE}}
local MAX_BODY = {{MAX_BODY}}
local IDEM_TTL_MS = {{IDEM_TTL_MS}}
-- How far past its limits an inbox may go before it is trimmed (a hundredth
-- of each, Retention::len_slack and age_slack_ms): a full inbox is cut back
-- to MAX_LEN once it holds more than MAX_LEN + LEN_SLACK entries, and
-- expired entries go once the oldest is more than MAX_AGE_MS + AGE_SLACK_MS
-- old. So a busy user's publishes share one trim (a head scan that walks the
-- entries trims have marked deleted, a XTRIM and a SET) instead of each
-- paying it.
local LEN_SLACK = {{LEN_SLACK}}
local AGE_SLACK_MS = {{AGE_SLACK_MS}}
-- A topic's limits ([topics]), with slack by the same rule.
local TOPIC_MAX_LEN = {{TOPIC_MAX_LEN}}
local TOPIC_MAX_AGE_MS = {{TOPIC_MAX_AGE_MS}}
local TOPIC_LEN_SLACK = {{TOPIC_LEN_SLACK}}
local TOPIC_AGE_SLACK_MS = {{TOPIC_AGE_SLACK_MS}}
-- Every key of a user expires this long after their last activity.
local EXPIRY_MS = MAX_AGE_MS + 2 * AGE_SLACK_MS
local MAX_TYPE = 64
local MAX_URL = 2048
-- A list of unread entries examines at most this many entries per call
-- (and says where it stopped in `next`): an inbox read one by one must not
-- cost a scan of all of it. Engine::LIST_SCAN on the Rust side.
local LIST_SCAN = 500
-- Most entries one XRANGE of a trim returns. A cut by length takes one
-- batch a call (a lowered max_len is caught up over calls); the age trim
-- takes as many as expired.
local TRIM_BATCH = 1000

local FIELDS = {type = true, title = true, body = true, url = true, icon = true, priority = true, data = true,
  collapse_key = true, ttl = true}
-- RFC 8030 §5.2: push services keep a push at most 28 days.
local MAX_TTL = 28 * 86400
-- What `url` and `icon` may name besides a relative reference: a
-- `javascript:` or `data:` link rendered by an integrator would run script.
local LINK_SCHEMES = {http = true, https = true}
local PRIORITIES = {low = true, normal = true, high = true}
-- The bytes Lua's %s matches.
local SPACE = {[9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true}

local function invalid(message)
  return redis.error_reply('HERALD_INVALID ' .. message)
end

-- Characters, not bytes: counts the bytes that start a UTF-8 sequence.
-- A string of at most `limit` bytes has at most `limit` characters, so the
-- count (a copy of the string) is made only for longer ones.
local function chars_over(s, limit)
  if #s <= limit then return false end
  local _, n = string.gsub(s, '[^\128-\191]', '')
  return n > limit
end

-- Same rules as UserId::parse: 1-128 bytes, no braces, spaces or controls.
-- (One anchored match: this runs on every call.)
local function user_base(keys)
  local base = keys[1]
  if type(base) ~= 'string' or #base > 128 + 11 or not string.find(base, '^herald:{u:[^{}%s%c]+}$') then
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

-- Dot-separated parts of a-z 0-9 _ -, none empty.
local function well_formed_type(t)
  if #t == 0 or #t > MAX_TYPE then return false end
  return not (string.find(t, '[^a-z0-9_%-.]') or string.byte(t, 1) == 46 or string.byte(t, -1) == 46
    or string.find(t, '..', 1, true))
end

-- Types already found well formed. A system publishes a handful of types
-- over and over, and the pattern scan was a noticeable part of validating
-- one. The library's locals live until it is loaded again (by a node whose library
-- wins: src/engine/redis/library.rs) or flushed, so this is a cache of a
-- pure check; it stops growing at KNOWN_TYPES_MAX, so a flood of distinct
-- types costs the scan, never memory.
local KNOWN_TYPES_MAX = 1024
local known_types, known_type_count = {}, 0
local function valid_type(t)
  if known_types[t] then return true end
  if not well_formed_type(t) then return false end
  if known_type_count < KNOWN_TYPES_MAX then
    known_types[t] = true
    known_type_count = known_type_count + 1
  end
  return true
end

local function absent(v)
  return v == nil or v == cjson.null
end

-- Whether every number in a decoded value is finite. cjson reads a number
-- no double holds (1e400) as inf, and takes NaN and Infinity, which are not
-- JSON; most JSON parsers refuse all of them. NewNotification::validate
-- has the same rule.
local function finite_numbers(v)
  if type(v) == 'number' then return v == v and v ~= math.huge and v ~= -math.huge end
  if type(v) == 'table' then
    for _, x in pairs(v) do
      if not finite_numbers(x) then return false end
    end
  end
  return true
end

-- Same rule as notification::is_safe_link: no space or control byte (URL
-- parsers drop some of them, so `java\tscript:` would pass a scheme check),
-- and a scheme, if any (text before a `:` that comes before any / ? #), from
-- LINK_SCHEMES.
local function bad_link(v)
  if absent(v) then return false end
  if type(v) ~= 'string' or #v > MAX_URL or string.find(v, '[%z\1-\32\127]') then return true end
  local scheme = string.match(v, '^([^:/?#]*):')
  return scheme ~= nil and not LINK_SCHEMES[string.lower(scheme)]
end

local function invalid_link(field)
  return invalid('notification.' .. field .. ': must be an http or https URL or a relative reference, at most '
    .. MAX_URL .. ' bytes, without spaces or control characters')
end

-- Whether `s` is UTF-8: every valid sequence becomes an ASCII byte, so any
-- byte above 127 left over was not part of one. (No utf8 library in Redis's
-- Lua; each gsub is one pass in C, and runs only for text that is not ASCII.
-- Replacing, not removing, keeps the bytes of two invalid runs from joining
-- into a valid one.) Excludes overlong forms and surrogates, as Rust does.
local UTF8_SEQUENCES = {
  '[\194-\223][\128-\191]',
  '\224[\160-\191][\128-\191]', '[\225-\236\238\239][\128-\191][\128-\191]', '\237[\128-\159][\128-\191]',
  '\240[\144-\191][\128-\191][\128-\191]', '[\241-\243][\128-\191][\128-\191][\128-\191]',
  '\244[\128-\143][\128-\191][\128-\191]',
}
local function is_utf8(s)
  if string.find(s, '^[%z\1-\127]*$') then return true end
  for _, sequence in ipairs(UTF8_SEQUENCES) do s = string.gsub(s, sequence, 'x') end
  return not string.find(s, '[\128-\255]')
end

-- Whether a raw tab, line feed or carriage return sits inside a JSON string
-- (JSON allows them only between tokens; cjson takes them anyway, and a
-- browser's JSON.parse then fails on the stored entry). Walks the strings
-- from quote to quote; runs only when the text holds such a byte.
local function raw_space_in_string(json)
  local i = 1
  while true do
    local open = string.find(json, '"', i, true)
    if not open then return false end
    local j = open + 1
    while true do
      local k = string.find(json, '[\\"]', j)
      if not k then return false end -- unterminated: cjson refuses it
      if string.byte(json, k) == 92 then
        j = k + 2
      else
        if string.find(string.sub(json, open + 1, k - 1), '[\t\n\r]') then return true end
        i = k + 1
        break
      end
    end
  end
end

-- The error texts the HTTP path gives for the same faults (error.rs).
local NOT_UTF8 = 'notification is not valid JSON: invalid UTF-8'
local RAW_CONTROL = 'notification is not valid JSON: a raw control character (write it as \\u00XX in a string)'

-- Returns the JSON to store, or nil and an error reply. Same rules as
-- NewNotification::validate on the HTTP path.
local function validate(json)
  if #json > MAX_PAYLOAD then
    return nil, redis.error_reply('HERALD_TOO_LARGE notification is ' .. #json .. ' bytes, over the limit of ' .. MAX_PAYLOAD)
  end
  -- cjson takes any bytes in a string, so what a browser (or the node) could
  -- not read back is refused here: bytes that are not UTF-8, and raw
  -- control characters (JSON wants them escaped). Raw line breaks may only
  -- be whitespace between tokens, and an SSE data line must not hold one.
  -- One anchored run decides the common case, printable ASCII only: the
  -- matcher expands `[...]*` in one tight loop, where an unanchored search
  -- for a class tries a match at every byte (what such a scan cost the
  -- FCALL path: docs/benchmarks/history.md, "core defects").
  if not string.find(json, '^[\32-\126]*$') then
    if not string.find(json, '^[^%z\1-\8\11\12\14-\31]*$') then return nil, invalid(RAW_CONTROL) end
    if not is_utf8(json) then return nil, invalid(NOT_UTF8) end
    if string.find(json, '\n', 1, true) or string.find(json, '\r', 1, true) or string.find(json, '\t', 1, true) then
      if raw_space_in_string(json) then return nil, invalid(RAW_CONTROL) end
      json = string.gsub(json, '[\r\n]', ' ')
    end
  end
  if SPACE[string.byte(json, 1)] or SPACE[string.byte(json, -1)] then json = strip(json) end
  if string.byte(json, 1) ~= 123 then return nil, invalid('notification must be a JSON object') end
  local ok, n = pcall(cjson.decode, json)
  if not ok or type(n) ~= 'table' then return nil, invalid('notification is not valid JSON') end
  for k in pairs(n) do
    if not FIELDS[k] then return nil, invalid('notification.' .. tostring(k) .. ': unknown field') end
  end
  if type(n.type) ~= 'string' or not valid_type(n.type) then
    return nil, invalid('notification.type: must be 1-' .. MAX_TYPE .. ' characters of a-z 0-9 _ - in dot-separated parts, like `comment.mention`')
  end
  if type(n.title) ~= 'string' or #n.title == 0 or chars_over(n.title, MAX_TITLE) then
    return nil, invalid('notification.title: must be 1-' .. MAX_TITLE .. ' characters')
  end
  if not absent(n.body) and (type(n.body) ~= 'string' or chars_over(n.body, MAX_BODY)) then
    return nil, invalid('notification.body: must be at most ' .. MAX_BODY .. ' characters')
  end
  if bad_link(n.url) then return nil, invalid_link('url') end
  if bad_link(n.icon) then return nil, invalid_link('icon') end
  -- Two plain lookups when the fields are absent (most publishes).
  local key, ttl = n.collapse_key, n.ttl
  if key ~= nil and key ~= cjson.null and (type(key) ~= 'string' or #key > 64
      or not string.find(key, '^[%w._:-]+$')) then
    return nil, invalid('notification.collapse_key: must be 1-64 characters of A-Z a-z 0-9 . _ - :')
  end
  if ttl ~= nil and ttl ~= cjson.null and (type(ttl) ~= 'number' or ttl < 0 or ttl > MAX_TTL
      or ttl ~= math.floor(ttl)) then
    return nil, invalid('notification.ttl: must be 0 to ' .. MAX_TTL .. ' seconds (28 days)')
  end
  if not absent(n.data) and not finite_numbers(n.data) then
    return nil, invalid('notification.data: numbers must fit a 64-bit float (at most about 1.8e308), as JSON parsers read them')
  end
  if n.priority == nil then
    n.priority = 'normal'
    json = '{"priority":"normal",' .. string.sub(json, 2)
  elseif not PRIORITIES[n.priority] then
    return nil, invalid('notification.priority: must be low, normal or high')
  end
  return json, nil, n
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

local function ids_of(entries)
  local ids = {}
  for i, e in ipairs(entries) do ids[i] = e[1] end
  return ids
end

local function entry_ms(id)
  return tonumber(string.match(id, '^%d+'))
end

local OLDEST, READ_UPTO, COVERED, EXPIRES = '~oldest_ms', '~read_upto', '~covered', '~expires_ms'

-- The mark-all-read watermark: `upto` (an id or nil) and how many entries of
-- the inbox are at or before it (`covered`). A publish makes one only when
-- it trims: the common path reads the count alone.
local function watermark(upto, covered)
  local w = {covered = tonumber(covered) or 0}
  if upto then w.ms, w.seq = split_id(upto) end
  return w
end

-- Whether entry `id` is at or before the watermark (and so read).
local function covers(w, id)
  if not w.ms then return false end
  local ms, seq = split_id(id)
  return ms < w.ms or (ms == w.ms and seq <= w.seq)
end

local function read_watermark(base)
  local f = redis.call('HMGET', base .. ':in_app', READ_UPTO, COVERED)
  return watermark(f[1], f[2])
end

-- Whether entry `id` is read (0/1), by the watermark or the read set.
local function read_flag(base, w, id)
  if covers(w, id) then return 1 end
  return redis.call('SISMEMBER', base .. ':read', id)
end

-- Every key of the user, for the shared expiry. (`idem:<k>` keys keep their
-- own, shorter one.)
local function user_keys(base)
  return {base .. ':inbox', base .. ':read', base .. ':clicked', base .. ':trimmed', base .. ':prefs', base .. ':in_app',
    base .. ':push'}
end

-- Moves the user's expiry to EXPIRY_MS from `now` if it was last moved more
-- than an age slack ago (`expires` is `~expires_ms` as read, or nil).
-- Returns the instant in force.
local function renew_if_due(base, expires, now)
  expires = tonumber(expires)
  if expires and expires - now >= EXPIRY_MS - AGE_SLACK_MS then return expires end
  expires = now + EXPIRY_MS
  redis.call('HSET', base .. ':in_app', EXPIRES, expires)
  for _, key in ipairs(user_keys(base)) do redis.call('PEXPIREAT', key, expires) end
  return expires
end

-- Gives a key just made (a first SADD, a SET) the user's expiry.
local function expire_with_user(base, key)
  local expires = redis.call('HGET', base .. ':in_app', EXPIRES)
  if expires then redis.call('PEXPIREAT', key, expires) end
end

-- Drops removed entries from the read state: their ids from the read and
-- clicked sets, and those at or before the watermark from its count (ids
-- come oldest first, as trims remove them). Given the read set's size
-- (optional), skips the SREMs when it is empty (clicked implies read) and
-- returns its size after.
local function forget(base, ids, read_count, w)
  if #ids == 0 then return read_count end
  local covered = 0
  while covered < #ids and covers(w, ids[covered + 1]) do covered = covered + 1 end
  if covered > 0 then
    w.covered = math.max(w.covered - covered, 0)
    redis.call('HSET', base .. ':in_app', COVERED, w.covered)
  end
  if read_count == 0 and covered == 0 then return read_count end
  local were_read = redis.call('SREM', base .. ':read', unpack(ids))
  redis.call('SREM', base .. ':clicked', unpack(ids))
  return read_count and read_count - were_read
end

-- Whether the inbox is past its limits: over MAX_LEN + LEN_SLACK entries,
-- or (by the `~oldest_ms` mark, which is never late) holding an entry older
-- than MAX_AGE_MS + AGE_SLACK_MS. Returns {over length, due for age}.
local function past_limits(len, oldest_mark, now_ms)
  return len > MAX_LEN + LEN_SLACK, not oldest_mark or oldest_mark < now_ms - MAX_AGE_MS - AGE_SLACK_MS
end

-- Trims the inbox to MAX_LEN entries when `by_length`, and to MAX_AGE_MS
-- when `by_age` (then moves the mark to the oldest entry kept), keeping
-- the read state (`w`, the watermark) and the trimmed watermark in step.
-- `len` and `read_count` are the inbox's length and SCARD(read) now;
-- returns them after trimming.
local function trim(base, inbox, now_ms, len, read_count, w, by_length, by_age)
  local newest_trimmed
  if by_length then
    local old = redis.call('XRANGE', inbox, '-', '+', 'COUNT', math.min(len - MAX_LEN, TRIM_BATCH))
    local ids = ids_of(old)
    read_count = forget(base, ids, read_count, w)
    newest_trimmed = ids[#ids]
    len = len - #ids
    redis.call('XTRIM', inbox, 'MAXLEN', len)
  end
  if by_age then
    local cutoff = now_ms - MAX_AGE_MS
    if cutoff > 0 then
      -- Forgets the expired ids a batch at a time (XRANGE returns each
      -- entry's document), then removes them all with one XTRIM: XDEL
      -- would seek each id (docs/benchmarks/history.md, "trimming in
      -- batches").
      local first_kept = cutoff .. '-0'
      local from, removed = '-', 0
      repeat
        local ids = ids_of(redis.call('XRANGE', inbox, from, '(' .. first_kept, 'COUNT', TRIM_BATCH))
        if #ids > 0 then
          read_count = forget(base, ids, read_count, w)
          removed = removed + #ids
          newest_trimmed = ids[#ids]
          from = '(' .. newest_trimmed
        end
      until #ids < TRIM_BATCH
      if removed > 0 then
        redis.call('XTRIM', inbox, 'MINID', first_kept)
        len = len - removed
      end
    end
    local head = redis.call('XRANGE', inbox, '-', '+', 'COUNT', 1)[1]
    if head then
      redis.call('HSET', base .. ':in_app', OLDEST, entry_ms(head[1]))
    end
  end
  if newest_trimmed then
    redis.call('SET', base .. ':trimmed', newest_trimmed)
    expire_with_user(base, base .. ':trimmed')
  end
  return len, read_count
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function unread_count(base, w)
  local len = redis.call('XLEN', base .. ':inbox')
  if len == 0 then return 0 end
  return len - redis.call('SCARD', base .. ':read') - (w or read_watermark(base)).covered
end

-- Trims the inbox for a read path by the same rule as a publish: a user
-- who gets no new notifications must not keep seeing (or counting) expired
-- ones, and a read must not change a count a publish would not. Returns
-- the unread count after, and the watermark (as the trim left it).
local function trim_for_read(base, inbox)
  local f = redis.call('HMGET', base .. ':in_app', OLDEST, READ_UPTO, COVERED)
  local w = watermark(f[2], f[3])
  local len = redis.call('XLEN', inbox)
  if len == 0 then return 0, w end
  local read_count = redis.call('SCARD', base .. ':read')
  local now = now_ms()
  local by_length, by_age = past_limits(len, tonumber(f[1]), now)
  if by_length or by_age then
    len, read_count = trim(base, inbox, now, len, read_count, w, by_length, by_age)
  end
  return len - read_count - w.covered, w
end

-- Web Push: `push.when` ('off' without a VAPID key) and `push.delay`.
local PUSH_MODE = '{{PUSH_MODE}}'
local PUSH_DELAY_MS = {{PUSH_DELAY_MS}}
local PUSH_QUEUE = 'herald:{push}:queue'
local PUSH_DELAYED = 'herald:{push}:delayed'
local PUSH_DEAD = 'herald:{push}:dead'
local PUSH_DEAD_KEPT = 10000
local QUIET = '~quiet'

-- Whether `now` (ms) is inside the quiet hours described by `rule`:
-- "<start minute> <end minute> <offset s> [<from s> <offset s>]...", the
-- window in minutes of the local day and the zone's UTC offsets, each from
-- a time on (Preferences::quiet_rule writes it). Same answer as
-- Preferences::in_quiet_hours: start inclusive, end exclusive, a window
-- may wrap midnight, and start = end is never quiet.
local function in_quiet_hours(rule, now)
  local n = {}
  for v in string.gmatch(rule, '%-?%d+') do n[#n + 1] = tonumber(v) end
  if #n < 3 then return false end
  local now_s = math.floor(now / 1000)
  local offset = n[3]
  for i = 4, #n - 1, 2 do
    if now_s < n[i] then break end
    offset = n[i + 1]
  end
  local minute = math.floor(((now_s + offset) % 86400) / 60)
  if n[1] <= n[2] then return minute >= n[1] and minute < n[2] end
  return minute >= n[1] or minute < n[2]
end

local function delayed_member(user, id, attempt, unread_only, endpoint)
  return user .. '\t' .. id .. '\t' .. attempt .. '\t' .. unread_only .. '\t' .. endpoint
end

-- Whether to push a stored entry, by the rules of engine::push (the memory
-- engine's `decide`): push on, the user not looking (no subscriber, for
-- `offline`), a device, the category's push flag, outside quiet hours
-- unless high priority. Queues the push when so. Returns the decision and
-- the reason for a skip. Costs nothing with push off, and one EXISTS for a
-- user with no device.
local function push_decision(base, id, type, priority, subscribers, now)
  if PUSH_MODE == 'off' then return 'none', '' end
  if PUSH_MODE == 'offline' and subscribers > 0 then return 'skipped', 'online' end
  if redis.call('EXISTS', base .. ':push') == 0 then return 'skipped', 'no_subscriptions' end
  local f = redis.call('HMGET', base .. ':in_app', '^' .. string.match(type, '^[^.]+'), '^*', QUIET)
  if (f[1] or f[2]) == '0' then return 'skipped', 'preferences' end
  if priority ~= 'high' and f[3] and in_quiet_hours(f[3], now) then return 'skipped', 'quiet_hours' end
  local user = string.sub(base, 11, -2)
  if PUSH_MODE == 'offline' then
    redis.call('XADD', PUSH_QUEUE, '*', 'u', user, 'id', id, 'a', 0, 'c', 0, 'e', '')
  else
    redis.call('ZADD', PUSH_DELAYED, now + PUSH_DELAY_MS, delayed_member(user, id, 0, 1, ''))
  end
  return 'queued', ''
end

-- Stores `json` (valid, compact, with priority) of type `type` for the user.
-- Returns {id, subscribers, duplicate (0/1), dropped (0/1), push, push
-- skip reason} or an error reply (push: none / queued / skipped).
-- Each redis.call here is paid on every publish: HMGET, XADD, XLEN, SCARD
-- and PUBLISH. Once per LEN_SLACK + 1 publishes to a full inbox, the cut
-- adds XRANGE, XTRIM and SET (and two SREMs if any are read). Once the
-- oldest entry may be past the age and its slack, the age check adds
-- XRANGE, XTRIM and SET to remove what expired, and XRANGE and HSET to move
-- the mark. Once per age slack, renewing the user's expiry adds an HSET and
-- a PEXPIREAT per key. (Reading the head once instead, with the entries it
-- would keep, cost more: XRANGE returns every entry's document.)
local function store(base, json, type, priority, key)
  -- The category's in_app flag, the default's, and the inbox's state.
  local settings = redis.call('HMGET', base .. ':in_app', string.match(type, '^[^.]+'), '*', OLDEST, EXPIRES,
    READ_UPTO, COVERED)
  if (settings[1] or settings[2]) == '0' then
    -- A user who is sent notifications is active, kept or not.
    renew_if_due(base, settings[4], now_ms())
    return {'', 0, 0, 1, 'none', ''}
  end
  local idem
  if key and key ~= '' then
    if #key > 200 or string.find(key, '[^\33-\126]') then
      return invalid('idempotency_key: must be 1 to 200 visible ASCII characters')
    end
    idem = base .. ':idem:' .. key
    local first = redis.call('GET', idem)
    if first then
      local id, subscribers = string.match(first, '^(%S+) (%d+)$')
      if PUSH_MODE == 'off' then return {id, tonumber(subscribers), 1, 0, 'none', ''} end
      return {id, tonumber(subscribers), 1, 0, 'skipped', 'duplicate'}
    end
  end
  local inbox = base .. ':inbox'
  local id = redis.call('XADD', inbox, '*', 'n', json)
  -- The new id's milliseconds are the server's clock (or the last id's, if
  -- the clock stepped back): no TIME call.
  local now = entry_ms(id)
  -- Before any trim: a trim gives the `trimmed` key the user's instant, and
  -- PEXPIREAT at an instant that passed while this call ran deletes it.
  renew_if_due(base, settings[4], now)
  local len = redis.call('XLEN', inbox)
  local covered = tonumber(settings[6]) or 0
  -- The read set holds only ids in the inbox: none besides a new one.
  local read_count = len == 1 and 0 or redis.call('SCARD', base .. ':read')
  -- The age check scans the inbox's head, so it runs only once the oldest
  -- entry seen at the last check may be past the age and its slack (or
  -- none was recorded). A new entry alone in the inbox is the oldest.
  local by_length, by_age = past_limits(len, tonumber(settings[3]), now)
  if len == 1 then
    if by_age then redis.call('HSET', base .. ':in_app', OLDEST, now) end
    -- Nothing older is left for a watermark to cover.
    if settings[5] then
      redis.call('HDEL', base .. ':in_app', READ_UPTO, COVERED)
      covered = 0
    end
  elseif by_length or by_age then
    local w = watermark(settings[5], covered)
    len, read_count = trim(base, inbox, now, len, read_count, w, by_length, by_age)
    covered = w.covered
  end
  local unread = len - read_count - covered
  local subscribers = redis.call('PUBLISH', base, 'n ' .. id .. ' ' .. unread .. ' ' .. json)
  if idem then
    -- Never past the user's own expiry: nothing of them outlives it.
    redis.call('SET', idem, id .. ' ' .. subscribers, 'PX', math.min(IDEM_TTL_MS, EXPIRY_MS))
  end
  -- With push off (no VAPID key), not even a call.
  if PUSH_MODE == 'off' then return {id, subscribers, 0, 0, 'none', ''} end
  local push, why = push_decision(base, id, type, priority, subscribers, now)
  return {id, subscribers, 0, 0, push, why}
end

-- Validates, then stores.
local function publish(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local json, err, n = validate(args[1] or '')
  if not json then return err end
  return store(base, json, n.type, n.priority, args[2])
end

-- FCALL herald_publish 1 herald:{u:<user>} '<notification json>' [<idempotency key>]
-- The backends' entry point: returns the entry id, or nil when the user's
-- preferences drop notifications of this category (in_app: false).
redis.register_function('herald_publish', function(keys, args)
  local result = publish(keys, args)
  if type(result) == 'table' and result[1] then
    if result[4] == 1 then return false end
    return result[1]
  end
  return result
end)

-- FCALL herald_publish_detail 1 <base> '<json>' '<idempotency key or empty>' '<type>' '<priority>'
-- The gateway's entry point: {id, subscribers, duplicate, dropped, push,
-- push skip reason}. The
-- gateway has already validated and normalized the notification with the
-- same rules (NewNotification::validate), so it is not decoded again here:
-- decoding is a large part of a publish's cost in Redis
-- (docs/benchmarks/history.md). Backends use herald_publish.
redis.register_function('herald_publish_detail', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  if not args[1] or not args[4] then return invalid('herald_publish_detail takes json, key, type and priority') end
  return store(base, args[1], args[3], args[4], args[2])
end)

-- The newest id the inbox ever gave ('0-0' if it does not exist): deleting
-- the newest entry does not make a cursor at it ahead.
local function last_generated(inbox)
  if redis.call('EXISTS', inbox) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', inbox)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end

-- Up to `count` entries of `stream` after `after`, for a replay, and the
-- reset the cursor needs: returns reset (0 none; 1 history trimmed after
-- the cursor, so the entries start at the oldest kept; 2 the cursor is
-- ahead of every id the stream gave), the entries as XRANGE returns them,
-- and `newest` (the stream's newest id when reset is 2, else '').
local function replay_page(base, stream, after, count)
  local start, reset = '(' .. after, 0
  local trimmed = redis.call('GET', base .. ':trimmed')
  if trimmed and id_before(after, trimmed) then
    reset, start = 1, '-'
  end
  local entries = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
  local newest = ''
  if #entries == 0 and reset == 0 then
    -- A caught-up client's cursor is the newest entry: one XREVRANGE tells.
    local head = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    if not head or id_before(head[1], after) then
      local last = last_generated(stream)
      if id_before(last, after) then
        reset, newest = 2, last
      end
    end
  end
  return reset, entries, newest
end

-- FCALL_RO herald_read_page 1 <base> <after id> <count>
-- Returns {reset, {{id, json, read (0/1), clicked (0/1)}, ...}, unread, newest},
-- reset and newest as replay_page gives them.
redis.register_function{function_name = 'herald_read_page', flags = {'no-writes'}, callback = function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local after = args[1]
  if not split_id(after) then return invalid('cursor must be <ms>-<seq>') end
  local reset, entries, newest = replay_page(base, base .. ':inbox', after, tonumber(args[2]) or 100)
  local w = read_watermark(base)
  local page = {}
  for _, e in ipairs(entries) do
    local id = e[1]
    page[#page + 1] = {id, e[2][2], read_flag(base, w, id), redis.call('SISMEMBER', base .. ':clicked', id)}
  end
  return {reset, page, unread_count(base, w), newest}
end}

local function not_found(id)
  return redis.error_reply('HERALD_NOT_FOUND ' .. id)
end

local function exists(inbox, id)
  return #redis.call('XRANGE', inbox, id, id) == 1
end

-- Tells every stream of the user (on every node) what changed.
local function sync(base, kind, unread, payload)
  redis.call('PUBLISH', base, kind .. ' - ' .. unread .. ' ' .. payload)
end

local function ids_json(ids)
  local quoted = {}
  for i, id in ipairs(ids) do quoted[i] = '"' .. id .. '"' end
  return '{"ids":[' .. table.concat(quoted, ',') .. ']}'
end

-- Checks every id first: an unknown one changes nothing.
local function all_exist(inbox, ids)
  for _, id in ipairs(ids) do
    if not split_id(id) or not exists(inbox, id) then return id end
  end
  return nil
end

-- Adds ids to the read set (giving a new set the user's expiry); returns
-- those that were unread.
local function add_read(base, w, ids)
  local read = base .. ':read'
  local fresh = redis.call('EXISTS', read) == 0
  local changed = {}
  for _, id in ipairs(ids) do
    if not covers(w, id) and redis.call('SADD', read, id) == 1 then changed[#changed + 1] = id end
  end
  if fresh and #changed > 0 then expire_with_user(base, read) end
  return changed
end

-- FCALL herald_mark_read 1 <base> <id>...: {unread}. Other tabs get `read`.
redis.register_function('herald_mark_read', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local inbox = base .. ':inbox'
  local missing = all_exist(inbox, args)
  if missing then return not_found(missing) end
  local w = read_watermark(base)
  local changed = add_read(base, w, args)
  local unread = unread_count(base, w)
  if #changed > 0 then sync(base, 'r', unread, ids_json(changed)) end
  return {unread}
end)

-- FCALL herald_mark_all_read 1 <base>: {unread, up_to}. Moves the watermark
-- to the newest entry and empties the read set: no entry is read or
-- written, however many the inbox holds.
redis.register_function('herald_mark_all_read', function(keys)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local inbox = base .. ':inbox'
  local newest = redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', 1)[1]
  local up_to = '0-0'
  if newest then
    up_to = newest[1]
    redis.call('HSET', base .. ':in_app', READ_UPTO, up_to, COVERED, redis.call('XLEN', inbox))
    -- UNLINK frees the set's memory off the main thread.
    redis.call('UNLINK', base .. ':read')
  end
  sync(base, 'r', 0, '{"all":true,"up_to":"' .. up_to .. '"}')
  return {0, up_to}
end)

-- The user's base key and an id that is in their inbox, or nil and an error.
local function existing_entry(keys, args)
  local base = user_base(keys)
  if not base then return nil, nil, invalid('key must be herald:{u:<user>}') end
  local id = args[1] or ''
  if all_exist(base .. ':inbox', {id}) then return nil, nil, not_found(id) end
  return base, id
end

-- FCALL herald_mark_clicked 1 <base> <id>: clicked implies read. {unread}.
redis.register_function('herald_mark_clicked', function(keys, args)
  local base, id, err = existing_entry(keys, args)
  if not base then return err end
  local clicked = base .. ':clicked'
  if redis.call('SADD', clicked, id) == 1 and redis.call('SCARD', clicked) == 1 then
    expire_with_user(base, clicked)
  end
  local w = read_watermark(base)
  local newly_read = #add_read(base, w, {id}) == 1
  local unread = unread_count(base, w)
  if newly_read then sync(base, 'r', unread, ids_json({id})) end
  return {unread}
end)

-- FCALL herald_delete 1 <base> <id>: {unread}. Other tabs get `deleted`.
redis.register_function('herald_delete', function(keys, args)
  local base, id, err = existing_entry(keys, args)
  if not base then return err end
  redis.call('XDEL', base .. ':inbox', id)
  local w = read_watermark(base)
  forget(base, {id}, nil, w)
  local unread = unread_count(base, w)
  sync(base, 'd', unread, ids_json({id}))
  return {unread}
end)

-- FCALL herald_list 1 <base> <before id or +> <limit> <unread only 0/1>
-- Newest first: {unread, next id or '', {{id, json, read, clicked}, ...}}.
-- Trims first (trim_for_read). Listing unread entries stops once it has
-- passed as many as the inbox counts, and after LIST_SCAN entries; then
-- `next` is the last one examined, so the client goes on from there.
redis.register_function('herald_list', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local inbox, clicked = base .. ':inbox', base .. ':clicked'
  local before = args[1]
  if before ~= '+' and not split_id(before) then return invalid('before must be an event id') end
  local unread, w = trim_for_read(base, inbox)
  local limit = tonumber(args[2]) or 20
  local unread_only = args[3] == '1'
  local items = {}
  local cursor = before == '+' and '+' or '(' .. before
  local more, cut, unread_seen, examined = false, nil, 0, 0
  while not (unread_only and unread_seen >= unread) do
    local chunk = redis.call('XREVRANGE', inbox, cursor, '-', 'COUNT', 100)
    for _, e in ipairs(chunk) do
      local is_read = read_flag(base, w, e[1])
      if is_read == 0 then unread_seen = unread_seen + 1 end
      if not unread_only or is_read == 0 then
        if #items == limit then
          more = true
          break
        end
        items[#items + 1] = {e[1], e[2][2], is_read, redis.call('SISMEMBER', clicked, e[1])}
      end
      examined = examined + 1
      if unread_only and unread_seen >= unread then break end
      if unread_only and examined >= LIST_SCAN then
        cut = e[1]
        break
      end
    end
    if more or cut or #chunk < 100 then break end
    cursor = '(' .. chunk[#chunk][1]
  end
  local next = ''
  if more then next = items[#items][1] elseif cut then next = cut end
  return {unread, next, items}
end)

-- FCALL herald_set_preferences 1 <base> <json> <category> <0/1> ...
-- Stores the document and the in_app flags the publish path reads, keeping
-- the inbox's `~` fields, and renews the user's expiry.
redis.register_function('herald_set_preferences', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local in_app = base .. ':in_app'
  local state = redis.call('HMGET', in_app, OLDEST, READ_UPTO, COVERED)
  redis.call('SET', base .. ':prefs', args[1])
  redis.call('DEL', in_app)
  if #args > 1 then
    redis.call('HSET', in_app, unpack(args, 2))
  end
  for i, field in ipairs({OLDEST, READ_UPTO, COVERED}) do
    if state[i] then redis.call('HSET', in_app, field, state[i]) end
  end
  renew_if_due(base, nil, now_ms())
  return 'OK'
end)

-- FCALL herald_push_subscribe 1 <base> <endpoint> <subscription json> <max>
-- Stores a device (replacing the one with the same endpoint, which becomes
-- the newest), drops the oldest past <max>, and renews the user's expiry.
-- Returns how many devices the user has.
local PUSH_SEQ = '~seq'
redis.register_function('herald_push_subscribe', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local key, max = base .. ':push', tonumber(args[3])
  if not args[2] or not max or max < 1 then return invalid('herald_push_subscribe takes endpoint, json and max') end
  local seq = redis.call('HINCRBY', key, PUSH_SEQ, 1)
  redis.call('HSET', key, args[1], seq .. ' ' .. args[2])
  local count = redis.call('HLEN', key) - 1
  if count > max then
    -- At most one over (each call adds one): the cap is small, so a scan is.
    local all, oldest, oldest_seq = redis.call('HGETALL', key), nil, nil
    for i = 1, #all, 2 do
      if all[i] ~= PUSH_SEQ then
        local n = tonumber(string.match(all[i + 1], '^(%d+) '))
        if not oldest_seq or n < oldest_seq then oldest, oldest_seq = all[i], n end
      end
    end
    redis.call('HDEL', key, oldest)
    count = count - 1
  end
  local expires = renew_if_due(base, redis.call('HGET', base .. ':in_app', EXPIRES), now_ms())
  redis.call('PEXPIREAT', key, expires)
  return count
end)

-- FCALL herald_push_unsubscribe 1 <base> <endpoint>: 1 if it was there.
redis.register_function('herald_push_unsubscribe', function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local key = base .. ':push'
  local removed = redis.call('HDEL', key, args[1] or '')
  if removed == 1 and redis.call('HLEN', key) == 1 then redis.call('DEL', key) end
  return removed
end)

-- FCALL_RO herald_push_subscriptions 1 <base>: {json, ...}, oldest first.
redis.register_function{function_name = 'herald_push_subscriptions', flags = {'no-writes'},
  callback = function(keys)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local all, rows = redis.call('HGETALL', base .. ':push'), {}
  for i = 1, #all, 2 do
    if all[i] ~= PUSH_SEQ then
      local n, json = string.match(all[i + 1], '^(%d+) (.*)$')
      rows[#rows + 1] = {tonumber(n), json}
    end
  end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  local out = {}
  for i, row in ipairs(rows) do out[i] = row[2] end
  return out
end}

-- FCALL_RO herald_push_target 1 <base> <id>: what a push worker sends,
-- {entry JSON or false, read (0/1), clicked (0/1), {device JSON, ...}}:
-- false once the entry was deleted or trimmed.
redis.register_function{function_name = 'herald_push_target', flags = {'no-writes'}, callback = function(keys, args)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local id = args[1] or ''
  local devices = {}
  local all = redis.call('HGETALL', base .. ':push')
  for i = 1, #all, 2 do
    if all[i] ~= PUSH_SEQ then devices[#devices + 1] = string.match(all[i + 1], '^%d+ (.*)$') end
  end
  local rows = redis.call('XRANGE', base .. ':inbox', id, id)
  if #rows == 0 then return {false, 0, 0, devices} end
  local clicked = redis.call('SISMEMBER', base .. ':clicked', id)
  return {rows[1][2][2], read_flag(base, read_watermark(base), id), clicked, devices}
end}

-- FCALL herald_push_promote 0 <max>: moves up to <max> delayed pushes that
-- are due into the queue, in one step (so two nodes never both move one).
-- Returns how many.
redis.register_function('herald_push_promote', function(keys, args)
  local due = redis.call('ZRANGE', PUSH_DELAYED, '-inf', now_ms(), 'BYSCORE', 'LIMIT', 0, tonumber(args[1]) or 100)
  for _, member in ipairs(due) do
    local u, id, a, c, e = string.match(member, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
    if u then redis.call('XADD', PUSH_QUEUE, '*', 'u', u, 'id', id, 'a', a, 'c', c, 'e', e) end
    redis.call('ZREM', PUSH_DELAYED, member)
  end
  return #due
end)

-- FCALL herald_push_settle 0 <ticket> [r <after ms> <user> <id> <attempt> <unread only> <endpoint>]...
--                                     [d <user> <id> <endpoint> <attempts> <reason>]...
-- Ends a claimed push: its retries go to the delayed set and its dead
-- letters to the dead-letter stream, and it leaves the queue, in one step,
-- so a node that dies now loses nothing and repeats nothing. Returns 0 and
-- changes nothing if the push was no longer pending: a worker that took it
-- over after the stale time has settled it already.
redis.register_function('herald_push_settle', function(keys, args)
  local ticket, now = args[1], now_ms()
  if not ticket then return invalid('herald_push_settle takes a ticket') end
  -- Every part is checked before anything changes.
  local i, parts = 2, {}
  while i <= #args do
    local width = (args[i] == 'r' and 7) or (args[i] == 'd' and 6)
    if not width or i + width - 1 > #args or (args[i] == 'r' and not tonumber(args[i + 1])) then
      return invalid('herald_push_settle: bad part at argument ' .. i)
    end
    parts[#parts + 1] = i
    i = i + width
  end
  if redis.call('XACK', PUSH_QUEUE, 'herald-push', ticket) == 0 then return 0 end
  redis.call('XDEL', PUSH_QUEUE, ticket)
  for _, p in ipairs(parts) do
    if args[p] == 'r' then
      redis.call('ZADD', PUSH_DELAYED, now + tonumber(args[p + 1]),
        delayed_member(args[p + 2], args[p + 3], args[p + 4], args[p + 5], args[p + 6]))
    else
      redis.call('XADD', PUSH_DEAD, 'MAXLEN', '~', PUSH_DEAD_KEPT, '*', 'u', args[p + 1], 'id', args[p + 2],
        'e', args[p + 3], 'a', args[p + 4], 'why', args[p + 5])
    end
  end
  return 1
end)

-- FCALL herald_stream_start 1 <base>: {newest id ever given, unread count},
-- after trimming by age (as herald_list). Opening a stream renews the
-- user's expiry.
redis.register_function('herald_stream_start', function(keys)
  local base = user_base(keys)
  if not base then return invalid('key must be herald:{u:<user>}') end
  local inbox = base .. ':inbox'
  local last, unread = '0-0', 0
  -- Renewed before the trim (see store). A user with no keys gets none by
  -- opening a stream; one with preferences but no inbox keeps them.
  if redis.call('EXISTS', base .. ':in_app') == 1 then
    renew_if_due(base, redis.call('HGET', base .. ':in_app', EXPIRES), now_ms())
  end
  if redis.call('EXISTS', inbox) == 1 then
    unread = trim_for_read(base, inbox)
    last = last_generated(inbox)
  end
  return {last, unread}
end)

--[[
Topics. Every key of a topic shares the hash tag {t:<topic>}; KEYS[1] is
the topic's base name, which is also its channel:

  herald:{t:<topic>}            channel  "n <id> 0 <json>": a new notification
  herald:{t:<topic>}:stream     stream   the notifications; field `n` = JSON,
                                         with a `topic` member naming the topic
  herald:{t:<topic>}:trimmed    string   newest id removed by trimming
  herald:{t:<topic>}:state      hash     ~oldest_ms and ~expires_ms, as a user's
  herald:{t:<topic>}:idem:<k>   string   the id of the first publish with key <k>

A topic has no per-user state: who read what is the clients' business. It is
trimmed by the inboxes' batched rule, with its own limits, and every key of
it expires TOPIC_MAX_AGE_MS plus twice its slack after the last publish.
]]

local TOPIC_EXPIRY_MS = TOPIC_MAX_AGE_MS + 2 * TOPIC_AGE_SLACK_MS

-- Same rule as TopicName::parse: 1-64 of A-Z a-z 0-9 _ - . : @.
local function topic_base(keys)
  local base = keys[1]
  if type(base) ~= 'string' or #base > 64 + 11 or not string.find(base, '^herald:{t:[A-Za-z0-9_%-%.:@]+}$') then
    return nil
  end
  return base
end

local function bad_topic_key()
  return invalid('key must be herald:{t:<topic>}, the topic 1-64 characters of A-Z a-z 0-9 _ - . : @')
end

-- Moves the topic's expiry to TOPIC_EXPIRY_MS from `now` when it was last
-- moved more than an age slack ago.
local function renew_topic_if_due(base, expires, now)
  expires = tonumber(expires)
  if expires and expires - now >= TOPIC_EXPIRY_MS - TOPIC_AGE_SLACK_MS then return end
  expires = now + TOPIC_EXPIRY_MS
  redis.call('HSET', base .. ':state', EXPIRES, expires)
  for _, key in ipairs({base .. ':stream', base .. ':trimmed', base .. ':state'}) do
    redis.call('PEXPIREAT', key, expires)
  end
end

-- Whether the topic is past its limits (see past_limits for an inbox).
local function topic_past_limits(len, oldest_mark, now)
  return len > TOPIC_MAX_LEN + TOPIC_LEN_SLACK or not oldest_mark
    or oldest_mark < now - TOPIC_MAX_AGE_MS - TOPIC_AGE_SLACK_MS
end

-- Trims the topic by the batched rule (see `trim` for an inbox): back to
-- TOPIC_MAX_LEN once past it and its slack, and rid of what is older than
-- TOPIC_MAX_AGE_MS once the oldest mark says some may be past the age and
-- its slack (then the mark moves to the oldest entry kept).
local function trim_topic(base, stream, now, len, oldest_mark)
  local newest_trimmed
  if len > TOPIC_MAX_LEN + TOPIC_LEN_SLACK then
    local ids = ids_of(redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(len - TOPIC_MAX_LEN, TRIM_BATCH)))
    newest_trimmed = ids[#ids]
    redis.call('XTRIM', stream, 'MAXLEN', len - #ids)
  end
  if not oldest_mark or oldest_mark < now - TOPIC_MAX_AGE_MS - TOPIC_AGE_SLACK_MS then
    local cutoff = now - TOPIC_MAX_AGE_MS
    if cutoff > 0 then
      -- No read state to keep in step: the newest expired entry is all a
      -- trim needs to know, and one XTRIM removes everything up to it.
      local expired = redis.call('XREVRANGE', stream, '(' .. cutoff .. '-0', '-', 'COUNT', 1)[1]
      if expired then
        newest_trimmed = expired[1]
        redis.call('XTRIM', stream, 'MINID', cutoff .. '-0')
      end
    end
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if head then redis.call('HSET', base .. ':state', OLDEST, entry_ms(head[1])) end
  end
  if newest_trimmed then
    redis.call('SET', base .. ':trimmed', newest_trimmed)
    local expires = redis.call('HGET', base .. ':state', EXPIRES)
    if expires then redis.call('PEXPIREAT', base .. ':trimmed', expires) end
  end
end

-- Stores `json` (valid, compact, with priority) in the topic and publishes
-- it. Returns {id, duplicate (0/1)} or an error reply.
local function store_topic(base, json, key)
  local idem
  if key and key ~= '' then
    if #key > 200 or string.find(key, '[^\33-\126]') then
      return invalid('idempotency_key: must be 1 to 200 visible ASCII characters')
    end
    idem = base .. ':idem:' .. key
    local first = redis.call('GET', idem)
    if first then return {first, 1} end
  end
  -- The name needs no escaping: topic_base admits no quote or backslash.
  local doc = '{"topic":"' .. string.sub(base, 11, -2) .. '",' .. string.sub(json, 2)
  local stream = base .. ':stream'
  local state = redis.call('HMGET', base .. ':state', OLDEST, EXPIRES)
  local id = redis.call('XADD', stream, '*', 'n', doc)
  local now = entry_ms(id)
  -- Before any trim, as for an inbox (see store).
  renew_topic_if_due(base, state[2], now)
  local len = redis.call('XLEN', stream)
  local oldest_mark = tonumber(state[1])
  if len == 1 then
    redis.call('HSET', base .. ':state', OLDEST, now)
  elseif topic_past_limits(len, oldest_mark, now) then
    trim_topic(base, stream, now, len, oldest_mark)
  end
  redis.call('PUBLISH', base, 'n ' .. id .. ' 0 ' .. doc)
  if idem then
    redis.call('SET', idem, id, 'PX', math.min(IDEM_TTL_MS, TOPIC_EXPIRY_MS))
  end
  return {id, 0}
end

-- FCALL herald_publish_topic 1 herald:{t:<topic>} '<notification json>' [<idempotency key>]
-- The backends' entry point: validates as herald_publish does, stores, and
-- publishes to every node with a follower. Returns the entry id.
redis.register_function('herald_publish_topic', function(keys, args)
  local base = topic_base(keys)
  if not base then return bad_topic_key() end
  local json, err = validate(args[1] or '')
  if not json then return err end
  local result = store_topic(base, json, args[2])
  if type(result) == 'table' and result[1] then return result[1] end
  return result
end)

-- FCALL herald_publish_topic_detail 1 <base> '<json>' '<idempotency key or empty>'
-- The gateway's entry point, for JSON it has validated: {id, duplicate}.
redis.register_function('herald_publish_topic_detail', function(keys, args)
  local base = topic_base(keys)
  if not base then return bad_topic_key() end
  if not args[1] then return invalid('herald_publish_topic_detail takes json and key') end
  return store_topic(base, args[1], args[2])
end)

-- FCALL_RO herald_read_topic_page 1 <base> <after id> <count>
-- Returns {reset, {{id, json}, ...}, newest}, reset as herald_read_page's.
redis.register_function{function_name = 'herald_read_topic_page', flags = {'no-writes'}, callback = function(keys, args)
  local base = topic_base(keys)
  if not base then return bad_topic_key() end
  local after = args[1]
  if not split_id(after) then return invalid('cursor must be <ms>-<seq>') end
  local reset, entries, newest = replay_page(base, base .. ':stream', after, tonumber(args[2]) or 100)
  local page = {}
  for i, e in ipairs(entries) do page[i] = {e[1], e[2][2]} end
  return {reset, page, newest}
end}

-- The topic trimmed for a read by the publish's rule: a topic nobody
-- publishes to must not keep showing what expired.
local function trim_topic_for_read(base, stream)
  local len = redis.call('XLEN', stream)
  if len == 0 then return end
  local now = now_ms()
  local oldest_mark = tonumber(redis.call('HGET', base .. ':state', OLDEST))
  if topic_past_limits(len, oldest_mark, now) then
    trim_topic(base, stream, now, len, oldest_mark)
  end
end

-- FCALL herald_topic_start 1 <base>: the newest id the topic ever gave
-- ('0-0' if none), after trimming by age.
redis.register_function('herald_topic_start', function(keys)
  local base = topic_base(keys)
  if not base then return bad_topic_key() end
  local stream = base .. ':stream'
  trim_topic_for_read(base, stream)
  return last_generated(stream)
end)

-- FCALL herald_list_topic 1 <base> <before id or +> <limit>
-- Newest first: {next id or '', {{id, json}, ...}}, after trimming.
redis.register_function('herald_list_topic', function(keys, args)
  local base = topic_base(keys)
  if not base then return bad_topic_key() end
  local stream = base .. ':stream'
  local before = args[1]
  if before ~= '+' and not split_id(before) then return invalid('before must be an event id') end
  local limit = tonumber(args[2]) or 20
  trim_topic_for_read(base, stream)
  local cursor = before == '+' and '+' or '(' .. before
  local items = {}
  for _, e in ipairs(redis.call('XREVRANGE', stream, cursor, '-', 'COUNT', limit + 1)) do
    items[#items + 1] = {e[1], e[2][2]}
  end
  local next = ''
  if #items > limit then
    items[#items] = nil
    next = items[#items][1]
  end
  return {next, items}
end)

-- FCALL_RO herald_version 0: proves the library is loaded, and which one:
-- "r<revision>:<gateway version>+<code hash>:<settings>".
redis.register_function{function_name = 'herald_version', flags = {'no-writes'}, callback = function()
  return VERSION
end}
