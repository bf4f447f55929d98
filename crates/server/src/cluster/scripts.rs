//! The Lua scripts Redis runs atomically: a script runs alone on the Redis thread, so what it
//! checks is still true when it writes, and nothing is half done.

/// Commits one batch of state changes: for each change, its checks, then its writes, then its
/// event on the change stream, which every other node follows. A change whose check fails is
/// skipped, the others go on; it is reported when it claimed a name another node took a
/// moment earlier (`absent`), not when what it removes is already gone (`present`, `equals`:
/// two nodes reaping the same dead node's member).
///
/// `ARGV[1]`: this node; `ARGV[2]`: a JSON array of changes, each
/// `{"checks":[[kind,key,field,value]],"ops":[[op,...]],"event":"..."}`, all strings (Lua's
/// cjson would round 63-bit ids through doubles). Returns the number of changes refused.
pub const COMMIT_STATE: &str = r#"
local node = ARGV[1]
local changes = cjson.decode(ARGV[2])
local function disown(uid)
  local old = redis.call('HGET', 'chat:owner', uid)
  if old then
    redis.call('SREM', 'chat:node:' .. old .. ':members', uid)
    redis.call('HDEL', 'chat:owner', uid)
  end
end
local refused = 0
for _, change in ipairs(changes) do
  local ok, conflict = true, false
  for _, c in ipairs(change.checks) do
    local kind, key, field = c[1], c[2], c[3]
    if kind == 'absent' and redis.call('HEXISTS', key, field) == 1 then ok, conflict = false, true end
    if kind == 'present' and redis.call('HEXISTS', key, field) == 0 then ok = false end
    if kind == 'equals' and redis.call('HGET', key, field) ~= c[4] then ok = false end
  end
  if conflict then
    refused = refused + 1
  elseif ok then
    for _, op in ipairs(change.ops) do
      local kind = op[1]
      if kind == 'hset' then
        redis.call('HSET', op[2], op[3], op[4])
      elseif kind == 'hdel' then
        redis.call('HDEL', op[2], op[3])
      elseif kind == 'hdelval' then
        local all = redis.call('HGETALL', op[2])
        for i = 1, #all, 2 do
          if all[i + 1] == op[3] then redis.call('HDEL', op[2], all[i]) end
        end
      elseif kind == 'own' then
        disown(op[2])
        redis.call('HSET', 'chat:owner', op[2], node)
        redis.call('SADD', 'chat:node:' .. node .. ':members', op[2])
        redis.call('SADD', 'chat:nodes', node)
      elseif kind == 'disown' then
        disown(op[2])
      elseif kind == 'closeroom' then
        local rk = op[2]
        for _, uid in ipairs(redis.call('HKEYS', 'chat:members:' .. rk)) do disown(uid) end
        local ruid = redis.call('HGET', 'chat:roomuid', rk)
        if ruid then
          redis.call('DEL', 'chat:room:' .. ruid .. ':stream', 'chat:room:' .. ruid .. ':last')
        end
        redis.call('HDEL', 'chat:rooms', rk)
        redis.call('HDEL', 'chat:roomuid', rk)
        redis.call('HDEL', 'chat:host', rk)
        redis.call('DEL', 'chat:members:' .. rk, 'chat:names:' .. rk)
      end
    end
    if change.event ~= '' then
      redis.call('XADD', 'chat:journal', 'MAXLEN', '~', ARGV[3], '*', 'node', node, 'change', change.event)
    end
  end
end
return refused
"#;

/// Reads the whole shared state at one instant: the change stream's last entry (where the
/// follower starts; later changes may overlap what is read, and applying them again is
/// harmless), then each room with its host, newest message id, members, and the members this
/// node (`ARGV[1]`) served before it restarted.
pub const LOAD_STATE: &str = r#"
local newest = redis.call('XREVRANGE', 'chat:journal', '+', '-', 'COUNT', 1)
local cursor = '0-0'
if #newest > 0 then cursor = newest[1][1] end
local out = {cursor}
local rooms = redis.call('HGETALL', 'chat:rooms')
for i = 1, #rooms, 2 do
  local rk = rooms[i]
  local host = redis.call('HGET', 'chat:host', rk) or ''
  local ruid = redis.call('HGET', 'chat:roomuid', rk) or '0'
  local last = redis.call('GET', 'chat:room:' .. ruid .. ':last') or '0'
  local members = redis.call('HVALS', 'chat:members:' .. rk)
  local ours = {}
  for _, uid in ipairs(redis.call('HKEYS', 'chat:members:' .. rk)) do
    if redis.call('HGET', 'chat:owner', uid) == ARGV[1] then table.insert(ours, uid) end
  end
  table.insert(out, {rooms[i + 1], host, last, members, ours})
end
return out
"#;

/// Assigns a room's next message id and publishes the message with it, atomically: ids are
/// strictly increasing per room across nodes, and the stream (bounded) holds every id the
/// channel carried, for gap fills. A retransmission the dedup key has seen (a client that
/// failed over before its ack) gets the id it already has, and nothing is published twice.
///
/// `ARGV`: room uid, dedup key (or empty), stream length, message body. Returns `{id, dup}`.
pub const PUBLISH: &str = r#"
if ARGV[2] ~= '' then
  local seen = redis.call('GET', ARGV[2])
  if seen then return {tonumber(seen), 1} end
end
local room = 'chat:room:' .. ARGV[1]
local id = redis.call('INCR', room .. ':last')
redis.call('XADD', room .. ':stream', 'MAXLEN', '~', ARGV[3], id .. '-0', 'm', ARGV[4])
redis.call('PUBLISH', room, id .. ' ' .. ARGV[4])
if ARGV[2] ~= '' then redis.call('SET', ARGV[2], id, 'EX', 600) end
return {id, 0}
"#;
