// The chat page: a lobby (name, room list, create, join, random pairing) and a room (messages,
// members, typing, composer) over the same-origin JSON API and the /ws WebSocket gateway
// (docs/http-api.md; the messages are protocol.md's version 2).
//
// The promise the page keeps: nothing lost, nothing twice. A message is saved in localStorage
// with its own `seq` before it leaves, shown as pending until the server's `ack`, and sent again
// with the SAME seq after any reconnect (the server answers a repeated seq with the same id and
// never stores it twice). Received messages are placed by id, ids already shown are ignored,
// and a gap in ids or a reconnect asks the server to replay from the last id shown.
//
// Several nodes (docs/scaling.md): the page asks its node for the others (/api/nodes) and, when
// the node it talks to stops answering, moves to the next with the same token and last id,
// through their API (CORS) and WebSocket; the nodes trust each other's pages.
//
// Everything that came from the network reaches the DOM through textContent, never innerHTML.
'use strict';

(function () {
  const PING_EVERY_MS = 2000; // protocol.md: the regular ping that catches anything missed
  const SILENCE_LIMIT_MS = 7000; // no frame at all for this long (pongs come every 2 s): dead link
  const TYPING_EVERY_MS = 3000; // send `typing` at most this often
  const TYPING_SHOWN_MS = 4000; // how long "x is typing" stays without a new typing event
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const HISTORY_PAGE = 50;
  const ROOMS_REFRESH_MS = 5000;
  const SEARCH_PAGE = 20; // matches per /search answer
  const WHO_EVERY_MS = 15000; // the member list (and who is away) is asked for this often
  const REPLAY_MAX = 256; // the most a register or ping replays at once
  const MISSING_MAX = 1000; // ids we remember as missing; more than that, a replay fills anyway
  const NODES_REFRESH_MS = 30000; // how often the list of nodes to fail over to is asked for
  // Flood control lets a member send a burst of messages at once, then one per interval; the
  // grant announces both (send_burst, send_interval_ms; absent when flood control is off). The
  // page paces itself a little under that, so that a queue resent after an outage is not
  // refused. A session saved before grants announced them assumes the server's defaults.
  const DEFAULT_PACE = { burst: 10, intervalMs: 200 };
  const UNPACED = { burst: 1000, intervalMs: 1 };

  /** The page's own pace: a little under what the grant announced. */
  function paceOf(grant) {
    if (!Number.isInteger(grant.send_burst) || !Number.isInteger(grant.send_interval_ms)) {
      return UNPACED;
    }
    return {
      burst: Math.max(1, grant.send_burst - 2),
      intervalMs: Math.ceil(grant.send_interval_ms * 1.25),
    };
  }

  function pace() {
    const saved = session && session.pace;
    const valid = saved && Number.isInteger(saved.burst) && saved.burst > 0 &&
      Number.isInteger(saved.intervalMs) && saved.intervalMs > 0;
    return valid ? saved : DEFAULT_PACE;
  }

  const STORE_NAME = 'chat.name';
  const STORE_SESSION = 'chat.session';

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // Persisted state: one membership (room, token, name, last id shown, seq counter, unacked).

  /** @type {null | {room:string, token:string, name:string, host:boolean,
   *   lastId:number|null, seq:number,
   *   unacked:{seq:number,text:string,kind?:string,to?:string}[]}} */
  let session = null;

  function loadSession() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE_SESSION) || 'null');
      const valid =
        s && typeof s.room === 'string' && typeof s.token === 'string' &&
        typeof s.name === 'string' && Number.isInteger(s.seq) && Array.isArray(s.unacked);
      if (valid) {
        if (!Number.isInteger(s.lastId)) s.lastId = null;
        s.unacked = s.unacked.filter(isUnacked);
        return s;
      }
    } catch (_) {
      // A corrupt entry is as good as none: the lobby.
    }
    return null;
  }

  /** An unacked message as saved: `kind` 'me' (an action) or 'dm' (to `to`), else plain chat. */
  function isUnacked(u) {
    if (!u || !Number.isInteger(u.seq) || typeof u.text !== 'string') return false;
    if (u.kind === 'dm') return typeof u.to === 'string';
    return u.kind === undefined || u.kind === 'me';
  }

  function saveSession() {
    if (!session) return;
    try {
      localStorage.setItem(STORE_SESSION, JSON.stringify(session));
    } catch (_) {
      // Storage full or disabled: the page still works, it just cannot survive a reload.
    }
  }

  function clearSession() {
    session = null;
    localStorage.removeItem(STORE_SESSION);
  }

  // ---------------------------------------------------------------------------------------------
  // The nodes: where the API and the WebSocket are. The page starts with the node that served
  // it and moves on, in the order /api/nodes lists them, when the one it uses cannot be reached.

  let base = location.origin; // the node in use
  let nodes = []; // the other nodes' origins, as /api/nodes last listed them

  /** A path on the node in use: relative while that is the page's own (same origin, no CORS). */
  function urlOf(path) {
    return base === location.origin ? path : base + path;
  }

  /** A node's origin as this page must reach it: the page's own scheme (a node serves HTTP and
   * HTTPS on one port, and an HTTPS page may not call plain HTTP), or null when not an origin. */
  function originOf(url) {
    try {
      const u = new URL(url);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
      return location.protocol + '//' + u.host;
    } catch (_) {
      return null;
    }
  }

  /** Asks the node in use for the live nodes. */
  async function refreshNodes() {
    let res;
    try {
      res = await fetch(urlOf('/api/nodes'));
      if (!res.ok) return;
      const data = await res.json();
      if (!data || !Array.isArray(data.nodes)) return;
      const listed = data.nodes
        .filter((n) => n && typeof n.url === 'string')
        .map((n) => originOf(n.url))
        .filter((o) => o !== null);
      nodes = Array.from(new Set(listed));
    } catch (_) {
      // Unreachable or not JSON: keep the list we had; connect() moves on if need be.
    }
  }

  /** Switches to the next node after the one in use; false when there is no other. */
  function moveOn() {
    const all = Array.from(new Set([location.origin, ...nodes]));
    if (all.length < 2) return false;
    const at = all.indexOf(base);
    base = all[(at + 1) % all.length];
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // The JSON API.

  /** Calls the API; resolves to {ok, status, data} or {ok:false, status, error, message}. */
  async function api(method, path, body, retried) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (session && path.startsWith('/api/rooms/') && method === 'DELETE') {
      init.headers.authorization = 'Bearer ' + session.token;
    }
    let res;
    try {
      res = await fetch(urlOf(path), init);
    } catch (_) {
      // The node is down (a refused connection reached no server): the next one, once.
      if (!retried && moveOn()) return api(method, path, body, true);
      return { ok: false, status: 0, error: 'network', message: 'The server cannot be reached.' };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      // 204 and non-JSON bodies: no data.
    }
    if (res.ok) return { ok: true, status: res.status, data };
    const error = data && typeof data.error === 'string' ? data.error : 'http_' + res.status;
    const message = data && typeof data.message === 'string' ? data.message : res.statusText;
    return { ok: false, status: res.status, error, message };
  }

  const roomPath = (room) => '/api/rooms/' + encodeURIComponent(room);

  /** A grant (`{token, room, username, host}`) from create, join or pair becomes the session. */
  function isGrant(g) {
    return g && typeof g.token === 'string' && typeof g.room === 'string' && typeof g.username === 'string';
  }

  // ---------------------------------------------------------------------------------------------
  // The lobby.

  let roomsTimer = null;
  let passwordRoom = null; // the private room the password form is for

  function showLobby(notice) {
    stopRoom();
    $('room').hidden = true;
    $('lobby').hidden = false;
    $('password-form').hidden = true;
    setNotice(notice || '');
    setStatus('');
    refreshRooms();
    clearInterval(roomsTimer);
    roomsTimer = setInterval(refreshRooms, ROOMS_REFRESH_MS);
  }

  function setNotice(text) {
    $('notice').textContent = text;
    $('notice').hidden = !text;
  }

  /** The name typed in the lobby, or null (with a notice) when there is none. */
  function chosenName() {
    const name = $('name').value.trim();
    if (!name) {
      setNotice('Pick a name first.');
      $('name').focus();
      return null;
    }
    localStorage.setItem(STORE_NAME, name);
    return name;
  }

  async function refreshRooms() {
    const res = await api('GET', '/api/rooms');
    if ($('lobby').hidden) return;
    if (!res.ok || !res.data || !Array.isArray(res.data.rooms)) {
      setStatus(res.status === 0 ? 'offline' : '');
      return;
    }
    setStatus('');
    renderRooms(res.data.rooms, Boolean(res.data.next));
  }

  function renderRooms(rooms, more) {
    const list = $('rooms');
    list.replaceChildren(...rooms.filter((r) => r && typeof r.name === 'string').map(roomItem));
    if (more) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'More rooms exist; only the first page is shown.';
      list.append(li);
    }
    $('no-rooms').hidden = rooms.length > 0;
  }

  function roomItem(room) {
    const li = document.createElement('li');
    li.className = 'room';
    li.dataset.room = room.name;
    const name = document.createElement('span');
    name.className = 'room-name';
    name.textContent = room.name;
    const count = document.createElement('span');
    count.className = 'count';
    const n = Number.isInteger(room.members) ? room.members : 0;
    count.textContent = n === 1 ? '1 member' : n + ' members';
    li.append(name, count);
    if (typeof room.topic === 'string' && room.topic) {
      const topic = document.createElement('span');
      topic.className = 'room-topic';
      topic.textContent = room.topic;
      topic.title = room.topic;
      li.append(topic);
    }
    if (room.private) {
      const lock = document.createElement('span');
      lock.className = 'private';
      lock.textContent = 'private';
      li.append(lock);
    }
    const join = document.createElement('button');
    join.type = 'button';
    join.className = 'join';
    join.textContent = 'Join';
    join.addEventListener('click', () => joinRoom(room.name, undefined));
    li.append(join);
    return li;
  }

  async function createRoom(event) {
    event.preventDefault();
    const username = chosenName();
    if (!username) return;
    const room = $('new-room').value.trim();
    if (!room) {
      setNotice('Name the room first.');
      return;
    }
    const body = { room, username };
    if ($('new-private').checked) body.password = $('new-password').value;
    const res = await api('POST', '/api/rooms', body);
    if (res.ok && isGrant(res.data)) {
      $('new-room').value = '';
      $('new-password').value = '';
      enterRoom(res.data);
    } else {
      setNotice(res.message || 'The room could not be created.');
    }
  }

  /** Joins `room`; a private one answers 403 bad_password, which opens the password form. */
  async function joinRoom(room, password) {
    const username = chosenName();
    if (!username) return;
    const body = { username };
    if (password !== undefined) body.password = password;
    const res = await api('POST', roomPath(room) + '/join', body);
    if (res.ok && isGrant(res.data)) {
      $('password-form').hidden = true;
      enterRoom(res.data);
    } else if (res.error === 'bad_password') {
      askPassword(room, password !== undefined);
    } else {
      setNotice(res.message || 'Could not join.');
      refreshRooms();
    }
  }

  function askPassword(room, wasWrong) {
    passwordRoom = room;
    $('password-room').textContent = room;
    $('password').value = '';
    $('password-form').hidden = false;
    setNotice(wasWrong ? 'Wrong password.' : '');
    $('password').focus();
  }

  async function pair(username) {
    setNotice('Looking for someone to chat with…');
    const res = await api('POST', '/api/pair', { username });
    if (res.ok && isGrant(res.data)) {
      setNotice('');
      enterRoom(res.data);
    } else {
      setNotice(res.message || 'Pairing failed.');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The room: view state (rebuilt on every entry, including after a reload).

  let ws = null; // the current socket; events from older sockets are ignored
  let registered = false; // the register went out on `ws`
  let ready = false; // the register was answered (its pong arrived)
  let firstConnect = true; // the first connection since this page showed the room
  let backoff = BACKOFF_MIN_MS;
  let reconnectTimer = null;
  let pingTimer = null;
  let lastHeard = 0; // when the server last sent anything (or when we started connecting)
  let parked = false; // `moved`: another tab has the token; do not fight it
  const shown = new Set(); // ids on screen
  const missing = new Set(); // ids skipped by a gap, not yet replayed
  let replayHigh = 0; // the highest id received since the last ping or register
  let receivedSincePing = 0;
  let olderPending = false; // a history request is on its way
  let noOlder = false; // the server said no older messages remain
  let lastTypingSent = 0;
  let sentSeq = 0; // the highest seq sent on the current socket
  let sendTokens = DEFAULT_PACE.burst; // the page's own token bucket, see paceOf
  let tokensAt = Date.now();
  let pumpTimer = null;
  const typingTimers = new Map(); // name -> timeout that hides "name is typing"
  let memberNames = [];
  let hostName = null;
  let awayTexts = new Map(); // name -> away text ("" for no reason), from `members` and `away`
  let topic = '';
  let markerPlaced = false; // the new-messages line went in after the first replay
  let emptyAtEntry = false; // the room had no message when this page came in
  let lastSearch = null; // {words, more, oldest}: the last search's answer, to page back
  let whoTimer = null;

  function enterRoom(grant) {
    session = {
      room: grant.room,
      token: grant.token,
      name: grant.username,
      host: Boolean(grant.host),
      pace: paceOf(grant),
      lastId: null,
      seq: 0,
      unacked: [],
    };
    saveSession();
    showRoom();
  }

  function showRoom() {
    clearInterval(roomsTimer);
    resetRoomView();
    $('lobby').hidden = true;
    $('room').hidden = false;
    $('room-name').textContent = session.room;
    $('new-chat').hidden = !session.room.startsWith('pair-');
    // Messages that were still unacked when the tab closed are shown pending and resent.
    for (const item of session.unacked) addPending(item);
    firstConnect = true;
    parked = false;
    backoff = BACKOFF_MIN_MS;
    pingTimer = setInterval(tick, PING_EVERY_MS);
    // Away marks reach others only through `members`: ask now and then.
    whoTimer = setInterval(() => {
      if (!ready) return;
      spendToken();
      send({ t: 'who' });
    }, WHO_EVERY_MS);
    connect();
    $('text').focus();
  }

  function resetRoomView() {
    shown.clear();
    missing.clear();
    for (const t of typingTimers.values()) clearTimeout(t);
    typingTimers.clear();
    olderPending = false;
    noOlder = false;
    memberNames = [];
    hostName = null;
    awayTexts = new Map();
    markerPlaced = false;
    emptyAtEntry = false;
    lastSearch = null;
    setTopic('');
    $('messages').replaceChildren();
    $('members').replaceChildren();
    $('typing').textContent = '';
    $('older').hidden = false;
  }

  /** Stops everything the room runs: timers and the socket. */
  function stopRoom() {
    clearInterval(pingTimer);
    pingTimer = null;
    clearInterval(whoTimer);
    whoTimer = null;
    clearTimeout(pumpTimer);
    pumpTimer = null;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    dropSocket();
  }

  // ---------------------------------------------------------------------------------------------
  // The socket: connect, register, reconnect with backoff.

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (!session || parked) return;
    const socket = new WebSocket(base.replace(/^http/, 'ws') + '/ws');
    ws = socket;
    registered = false;
    ready = false;
    lastHeard = Date.now();
    setConn(base === location.origin ? 'connecting…' : 'connecting to ' + new URL(base).host + '…');
    socket.onopen = () => {
      if (ws === socket) register();
    };
    socket.onmessage = (event) => {
      if (ws !== socket) return;
      lastHeard = Date.now();
      handleFrame(event.data);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      // Never answered: this node is down or refusing, try the next. (A socket that worked
      // and broke tries its node once more first: the network may have blinked.)
      if (!ready) moveOn();
      scheduleReconnect();
    };
  }

  /** Forgets the current socket without reconnecting (its late events are ignored). */
  function dropSocket() {
    const socket = ws;
    ws = null;
    registered = false;
    ready = false;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      try {
        socket.close();
      } catch (_) {
        // Closing a socket that never opened can throw in some browsers; it is gone either way.
      }
    }
  }

  function scheduleReconnect() {
    registered = false;
    ready = false;
    if (!session || parked || reconnectTimer) return;
    // Jitter keeps a room full of pages from reconnecting in lockstep after a restart.
    const delay = Math.round(backoff * (0.5 + Math.random() / 2));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setConn('reconnecting…');
    setStatus('offline');
    reconnectTimer = setTimeout(connect, delay);
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  /** Registers with the last id shown (the server replays what came after it), then resends
   * every unacked message with its original seq. */
  function register() {
    const reg = { t: 'register', room: session.room, token: session.token };
    const from = replayFrom();
    if (from !== null) reg.last_id = from;
    startReplay();
    send(reg);
    registered = true;
    // After a reload the screen is empty: show the conversation up to where we were.
    if (firstConnect && session.lastId !== null) requestHistory(session.lastId + 1);
    firstConnect = false;
    sentSeq = 0; // a new socket: everything unacked goes out again, with its own seq
    pump();
  }

  /** Sends the unacked messages not yet sent on this socket, in seq order, as fast as the
   * page's token bucket allows; comes back for the rest. */
  function pump() {
    clearTimeout(pumpTimer);
    pumpTimer = null;
    if (!registered || !session) return;
    refillTokens();
    for (const item of session.unacked) {
      if (item.seq <= sentSeq) continue;
      if (sendTokens < 1) {
        pumpTimer = setTimeout(pump, pace().intervalMs);
        return;
      }
      sendTokens -= 1;
      sentSeq = item.seq;
      send(wireOf(item));
    }
  }

  /** What an unacked item goes out as: `msg`, `me` or `dm`, each with its own seq. */
  function wireOf(item) {
    if (item.kind === 'me') return { t: 'me', seq: item.seq, text: item.text };
    if (item.kind === 'dm') return { t: 'dm', seq: item.seq, to: item.to, text: item.text };
    return { t: 'msg', seq: item.seq, text: item.text };
  }

  /** Flood control counts requests too (who, topic, search, the host's commands): each one
   * takes a token from the page's bucket, so that the messages after it are paced for it. */
  function spendToken() {
    refillTokens();
    sendTokens -= 1;
  }

  function refillTokens() {
    const now = Date.now();
    const { burst, intervalMs } = pace();
    const earned = Math.floor((now - tokensAt) / intervalMs);
    if (earned > 0) {
      sendTokens = Math.min(burst, sendTokens + earned);
      tokensAt += earned * intervalMs;
    }
    // A pace learned after the bucket was filled (a new grant) lowers it at once.
    sendTokens = Math.min(sendTokens, burst);
    if (sendTokens >= burst) tokensAt = now;
  }

  /** The id to replay after: just below the oldest missing id, else the newest shown. */
  function replayFrom() {
    if (missing.size > 0) return Math.min(...missing) - 1;
    // A room that was empty when we came in: everything in it is new to us. (What the server
    // says in our name without a seq, a shared file's line, is not sent to us: a ping finds it.)
    if (session.lastId === null && emptyAtEntry) return 0;
    return session.lastId;
  }

  function startReplay() {
    replayHigh = 0;
    receivedSincePing = 0;
  }

  function ping() {
    if (!ready) return;
    const from = replayFrom();
    startReplay();
    send(from === null ? { t: 'ping' } : { t: 'ping', last_id: from });
  }

  /** Every 2 s: the regular ping, and the check that the link is still alive. */
  function tick() {
    if (!ws) return;
    if (Date.now() - lastHeard > SILENCE_LIMIT_MS) {
      // A dead network may never close the socket by itself: give up on it and start over.
      const answered = ready;
      dropSocket();
      if (!answered) moveOn();
      scheduleReconnect();
      return;
    }
    ping();
  }

  // ---------------------------------------------------------------------------------------------
  // Frames from the server.

  const HANDLERS = {
    members: onMembers,
    msg: onMsg,
    ack: onAck,
    history: onHistory,
    joined: onJoined,
    left: onLeft,
    typing: onTyping,
    pong: onPong,
    error: onError,
    room_closed: onRoomClosed,
    moved: onMoved,
    skip: onSkip,
    topic: onTopic,
    kicked: onKicked,
    host: onHost,
    away: onAway,
    found: onFound,
  };

  function handleFrame(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch (_) {
      return; // not ours to understand
    }
    if (!event || typeof event.t !== 'string' || !session) return;
    const handler = HANDLERS[event.t];
    if (handler) handler(event);
  }

  function isChat(m) {
    return m && Number.isInteger(m.id) && m.id > 0 && typeof m.from === 'string' && typeof m.text === 'string';
  }

  function onMsg(m) {
    if (!isChat(m)) return;
    receivedSincePing += 1;
    replayHigh = Math.max(replayHigh, m.id);
    noteId(m.id);
    hideTyping(m.from);
    if (!shown.has(m.id)) showMessage(m);
  }

  /** A direct message between two others: its id is used, there is nothing to show. */
  function onSkip(s) {
    if (!Number.isInteger(s.id) || s.id <= 0) return;
    receivedSincePing += 1;
    replayHigh = Math.max(replayHigh, s.id);
    noteId(s.id);
    shown.add(s.id);
  }

  function onTopic(t) {
    if (typeof t.name !== 'string' || typeof t.text !== 'string') return;
    // Asking again for the topic the room already has is answered to us alone: no news.
    if (t.text === topic) return;
    setTopic(t.text);
    addNotice(t.text === '' ? t.name + ' cleared the topic' : t.name + ' set the topic: ' + t.text);
  }

  function setTopic(text) {
    topic = text;
    $('topic').textContent = text;
    $('topic').hidden = !text;
    $('topic').title = text;
  }

  /** Keeps lastId (the newest id seen) and notices gaps, which it asks the server to replay. */
  function noteId(id) {
    missing.delete(id);
    if (session.lastId === null) {
      // The first id in this room: older ones are history, not a gap.
      session.lastId = id;
      saveSession();
      return;
    }
    if (id > session.lastId + 1) {
      for (let k = session.lastId + 1; k < id && missing.size < MISSING_MAX; k += 1) {
        if (!shown.has(k)) missing.add(k);
      }
      ping();
    }
    if (id > session.lastId) {
      session.lastId = id;
      saveSession();
    }
  }

  function onAck(a) {
    if (!Number.isInteger(a.seq) || !Number.isInteger(a.id)) return;
    session.unacked = session.unacked.filter((u) => u.seq !== a.seq);
    noteId(a.id);
    saveSession();
    const el = pendingElement(a.seq);
    if (!el) return;
    if (shown.has(a.id)) {
      el.remove(); // a replay (or, for a direct message, its own copy) showed it already
    } else {
      confirm(el, a.id);
    }
  }

  function onHistory(h) {
    olderPending = false;
    const messages = Array.isArray(h.messages) ? h.messages.filter(isChat) : [];
    const keep = keepScroll();
    for (const m of messages) {
      missing.delete(m.id);
      if (!shown.has(m.id)) showMessage(m, true);
    }
    keep();
    if (h.more === false) noOlder = true;
    updateOlder();
  }

  /** Hides "Load older" once nothing older can exist: the server said so, or id 1 is shown. */
  function updateOlder() {
    const first = $('messages').querySelector('.msg[data-id]');
    if (first && Number(first.dataset.id) === 1) noOlder = true;
    $('older').hidden = noOlder;
  }

  function onPong(p) {
    if (!ready) {
      ready = true;
      backoff = BACKOFF_MIN_MS;
      setConn('');
      setStatus('online');
      refreshNodes();
      // An empty room (no stored message yet) has no history to load.
      if (p.id === 0 && shown.size === 0) noOlder = true;
      if (!markerPlaced) emptyAtEntry = p.id === 0;
      updateOlder();
      // The first answer since the room was shown: everything up to here was replayed.
      if (!markerPlaced) {
        markerPlaced = true;
        if (shown.size > 0) addMarker(Number.isInteger(p.id) ? p.id : session.lastId || 0);
      }
    }
    // The replay went in id order, so a missing id below the highest one it delivered does not
    // exist (a crash can skip ids): stop asking for it. A replay cut at its limit proves less.
    if (receivedSincePing < REPLAY_MAX) {
      for (const k of missing) if (k < replayHigh) missing.delete(k);
    }
    // More stored than we have: the replay was cut; ask for the rest.
    if (Number.isInteger(p.id) && session.lastId !== null && p.id > session.lastId && receivedSincePing > 0) {
      ping();
    }
  }

  function onMembers(m) {
    if (!Array.isArray(m.names)) return;
    memberNames = m.names.filter((n) => typeof n === 'string');
    hostName = typeof m.host === 'string' ? m.host : null;
    awayTexts = new Map();
    if (m.away && typeof m.away === 'object') {
      for (const [name, text] of Object.entries(m.away)) {
        if (typeof text === 'string') awayTexts.set(name, text);
      }
    }
    session.host = hostName === session.name;
    setTopic(typeof m.topic === 'string' ? m.topic : '');
    renderMembers(Number.isInteger(m.more) ? m.more : 0);
  }

  function onJoined(j) {
    if (typeof j.name !== 'string') return;
    if (!memberNames.includes(j.name)) memberNames.push(j.name);
    renderMembers(0);
    addNotice(j.name + ' joined');
  }

  function onLeft(l) {
    if (typeof l.name !== 'string') return;
    memberNames = memberNames.filter((n) => n !== l.name);
    awayTexts.delete(l.name);
    renderMembers(0);
    hideTyping(l.name);
    const how = {
      timeout: ' timed out',
      kicked: ' was kicked out by the host',
      banned: ' was banned by the host',
    }[l.reason];
    let text = l.name + (how || ' left');
    // A pair room stays open for the one left behind, waiting for a new partner.
    if (session.room.startsWith('pair-')) text += ': wait here for someone new, or press New chat.';
    addNotice(text);
  }

  /** The host removed us (and banned our address when `ban`): the token is gone. */
  function onKicked(k) {
    const by = typeof k.by === 'string' ? k.by : 'the host';
    const room = session.room;
    dropSocket();
    clearSession();
    showLobby(
      k.ban === true
        ? 'You were banned from ' + room + ' by ' + by + '.'
        : 'You were kicked out of ' + room + ' by ' + by + '.'
    );
  }

  function onHost(h) {
    if (typeof h.name !== 'string') return;
    hostName = h.name;
    session.host = h.name === session.name;
    saveSession();
    renderMembers(0);
    addNotice(session.host ? 'You are now the host' : h.name + ' is now the host');
  }

  /** The answer to our own `away` or `back`. */
  function onAway(a) {
    if (typeof a.name !== 'string') return;
    if (typeof a.text === 'string') {
      awayTexts.set(a.name, a.text);
      addNotice(a.text ? 'You are marked away: ' + a.text : 'You are marked away');
    } else {
      awayTexts.delete(a.name);
      addNotice('You are back');
    }
    renderMembers(0);
  }

  /** Search results: a block of their own in the conversation, newest search last. */
  function onFound(f) {
    if (typeof f.words !== 'string' || !Array.isArray(f.messages)) return;
    const messages = f.messages.filter(isChat);
    const older = lastSearch !== null && lastSearch.words === f.words && lastSearch.oldest !== null;
    const oldest = messages.length ? Math.min(...messages.map((m) => m.id)) : null;
    lastSearch = { words: f.words, more: f.more === true && oldest !== null, oldest };
    const block = addNotice('', 'search-block');
    const head = document.createElement('div');
    head.className = 'search-head';
    const n = messages.length;
    head.textContent = (older ? 'Older matches for “' : 'Search for “') + f.words + '”: ' +
      (n === 0 ? 'nothing found' : n === 1 ? '1 message' : n + ' messages');
    block.append(head);
    for (const m of messages) {
      const item = document.createElement('div');
      item.className = 'found';
      item.dataset.id = String(m.id);
      const when = document.createElement('time');
      const date = Number.isFinite(m.ts) ? new Date(m.ts) : null;
      when.textContent = date ? date.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' }) : '';
      const from = document.createElement('span');
      from.className = 'from';
      from.textContent = m.me ? '* ' + m.from : typeof m.to === 'string' ? m.from + ' → ' + m.to : m.from;
      const text = document.createElement('span');
      text.className = 'text';
      text.textContent = m.text;
      item.append(when, from, text);
      block.append(item);
    }
    if (lastSearch.more) {
      const more = document.createElement('button');
      more.type = 'button';
      more.className = 'link search-more';
      more.textContent = 'Older matches';
      more.addEventListener('click', () => {
        more.remove();
        search(f.words);
      });
      block.append(more);
    }
    $('scroller').scrollTop = $('scroller').scrollHeight;
  }

  /** `/search WORDS`; the same words again page back from the oldest match shown. */
  function search(words) {
    const req = { t: 'search', words, limit: SEARCH_PAGE };
    if (lastSearch && lastSearch.words === words && lastSearch.more) req.before = lastSearch.oldest;
    else lastSearch = null;
    request(req);
  }

  function onTyping(t) {
    if (typeof t.name === 'string' && t.name !== session.name && !isIgnored(t.name)) showTyping(t.name);
  }

  function onError(e) {
    if (e.code === 'no_room') {
      const room = session.room;
      clearSession();
      showLobby('The room ' + room + ' no longer exists (or you are no longer in it).');
    } else if (Number.isInteger(e.seq)) {
      const why = { rate_limited: 'too fast: not sent', too_large: 'too long: not sent' }[e.code];
      markFailed(e.seq, why || (typeof e.message === 'string' ? e.message : 'not sent'));
    } else if (e.code === 'rate_limited') {
      // A refused `history` (flood control counts it) is never answered: allow asking again.
      olderPending = false;
    } else {
      // A refused command (not_host, no_such_member, a topic too long): say why.
      olderPending = false;
      const why = typeof e.message === 'string' && e.message ? e.message : String(e.code);
      addNotice(why, 'error-line');
    }
  }

  function onRoomClosed(c) {
    if (c.reason === 'server_shutdown') {
      // The room itself survives a restart: keep the membership and reconnect.
      addNotice('The server is restarting…');
      return;
    }
    const why = { host_left: 'the host left', host_timeout: 'the host went away' }[c.reason] || 'it was closed';
    const room = session.room;
    dropSocket();
    clearSession();
    showLobby('The room ' + room + ' was closed: ' + why + '.');
  }

  function onMoved() {
    // Another tab or device registered with this token. Reconnecting on our own would take it
    // back and start a tug of war, so wait for the person to choose.
    parked = true;
    dropSocket();
    setConn('open in another tab');
    addNotice('This chat was opened elsewhere. Reload the page to use it here.');
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering messages: every element has a sort key (its id; notices sort after the id they
  // follow; pending messages last), and each new one is placed by key.

  /** `shared NAME (SIZE): /get ID`, the line the server says for a shared file. */
  const SHARED_LINE = /^shared (.+) \((\d+ bytes|\d+\.\d (?:KiB|MiB|GiB))\): \/get ([0-9a-f]{6,64})$/;

  function messageElement(m) {
    const el = document.createElement('div');
    el.className = 'msg';
    el.dataset.from = m.from;
    if (m.from === session.name) el.classList.add('mine');
    const dm = typeof m.to === 'string';
    const from = document.createElement('span');
    from.className = 'from';
    const text = document.createElement('span');
    text.className = 'text';
    if (m.me) {
      el.classList.add('action');
      from.textContent = '* ' + m.from;
    } else if (dm) {
      el.classList.add('dm');
      from.textContent = m.from + ' → ' + m.to;
    } else {
      from.textContent = m.from;
    }
    highlightInto(text, m.text, m.from === session.name ? null : session.name);
    if (text.querySelector('mark')) el.classList.add('mention');
    el.append(from);
    if (dm) {
      const tag = document.createElement('span');
      tag.className = 'dm-tag';
      tag.textContent = m.from === session.name ? 'private, to ' + m.to : 'private, to you';
      el.append(tag);
    }
    el.append(text);
    const time = document.createElement('time');
    const when = Number.isFinite(m.ts) ? new Date(m.ts) : new Date();
    el.dataset.ts = String(when.getTime());
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    el.append(time);
    const shared = !m.me && !dm ? SHARED_LINE.exec(m.text) : null;
    if (shared) {
      const get = document.createElement('button');
      get.type = 'button';
      get.className = 'download';
      get.dataset.file = shared[3];
      get.textContent = 'Download';
      get.title = 'Download ' + shared[1] + ' (' + shared[2] + '), checked against its size and SHA-256';
      get.addEventListener('click', () => download(shared[3], get));
      el.append(get);
    }
    if (isIgnored(m.from) && m.from !== session.name) el.hidden = true;
    return el;
  }

  /** Whole-word, case-insensitive mentions of `name` (as the terminal client finds them). */
  function mentionPattern(name) {
    const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    return new RegExp('(?<![\\p{L}\\p{N}_])' + escaped + '(?![\\p{L}\\p{N}_])', 'giu');
  }

  /** Puts `text` into `el` as text nodes, with each mention of `name` in a <mark>. */
  function highlightInto(el, text, name) {
    if (!name) {
      el.textContent = text;
      return;
    }
    let pattern;
    try {
      pattern = mentionPattern(name.normalize('NFC'));
    } catch (_) {
      el.textContent = text; // a browser without lookbehind or \p: no highlighting
      return;
    }
    const normal = text.normalize('NFC');
    if (normal !== text) {
      // Offsets below are in the normalized text; show it only if it matches at all.
      if (!pattern.test(normal)) {
        el.textContent = text;
        return;
      }
      pattern.lastIndex = 0;
      text = normal;
    }
    let at = 0;
    for (const found of text.matchAll(pattern)) {
      if (found.index > at) el.append(document.createTextNode(text.slice(at, found.index)));
      const mark = document.createElement('mark');
      mark.textContent = found[0];
      el.append(mark);
      at = found.index + found[0].length;
    }
    if (at < text.length) el.append(document.createTextNode(text.slice(at)));
  }

  function showMessage(m, older) {
    const el = messageElement(m);
    el.dataset.id = String(m.id);
    el.dataset.key = String(m.id);
    shown.add(m.id);
    place(el, !older);
    renderDays();
  }

  function addPending(item) {
    const m = { from: session.name, text: item.text, me: item.kind === 'me' };
    if (item.kind === 'dm') m.to = item.to;
    const el = messageElement(m);
    el.classList.add('pending');
    el.dataset.seq = String(item.seq);
    el.dataset.key = 'Infinity';
    place(el, true);
  }

  function pendingElement(seq) {
    return $('messages').querySelector('.msg.pending[data-seq="' + seq + '"]');
  }

  /** A pending message the server acked: it takes its id and its place. */
  function confirm(el, id) {
    el.classList.remove('pending');
    delete el.dataset.seq;
    el.dataset.id = String(id);
    el.dataset.key = String(id);
    shown.add(id);
    el.remove();
    place(el, true);
    renderDays();
  }

  function markFailed(seq, why) {
    session.unacked = session.unacked.filter((u) => u.seq !== seq);
    saveSession();
    const el = pendingElement(seq);
    if (!el) return;
    el.classList.remove('pending');
    el.classList.add('failed');
    delete el.dataset.seq;
    const reason = document.createElement('span');
    reason.className = 'reason';
    reason.textContent = why;
    el.append(reason);
  }

  function addNotice(text, kind) {
    const el = document.createElement('div');
    el.className = 'notice-line';
    if (kind) el.classList.add(kind);
    el.textContent = text;
    // After the newest message so far, before anything pending.
    el.dataset.key = String((session.lastId || 0) + 0.5);
    place(el, true);
    return el;
  }

  /** Several lines at once (/help, /ignore's list), kept together. */
  function addNoticeBlock(lines) {
    const el = addNotice('', 'info-block');
    for (const line of lines) {
      const div = document.createElement('div');
      div.textContent = line;
      el.append(div);
    }
    $('scroller').scrollTop = $('scroller').scrollHeight;
  }

  /** The line between what was replayed on entering and what is new, after id `id`. */
  function addMarker(id) {
    const el = document.createElement('div');
    el.className = 'new-marker';
    el.textContent = 'new messages';
    el.dataset.key = String(id + 0.4);
    place(el, true);
  }

  /** Puts a date line before the first message of each day (in the reader's time zone). */
  function renderDays() {
    const list = $('messages');
    for (const old of list.querySelectorAll('.day-line')) old.remove();
    let last = null;
    for (const el of list.querySelectorAll('.msg[data-id]')) {
      const when = new Date(Number(el.dataset.ts));
      if (Number.isNaN(when.getTime())) continue;
      const day = when.toDateString();
      if (day === last) continue;
      last = day;
      const line = document.createElement('div');
      line.className = 'day-line';
      line.textContent = when.toLocaleDateString([], {
        weekday: 'long', day: 'numeric', month: 'long', year: 'numeric',
      });
      line.dataset.key = String(Number(el.dataset.key) - 0.1);
      list.insertBefore(line, el);
    }
  }

  /** Inserts `el` after the last element whose key is not larger, scanning from the end (new
   * messages belong there, so this is usually one step). */
  function place(el, follow) {
    const list = $('messages');
    const scroller = $('scroller');
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    const key = Number(el.dataset.key);
    let after = list.lastElementChild;
    while (after && Number(after.dataset.key) > key) after = after.previousElementSibling;
    list.insertBefore(el, after ? after.nextSibling : list.firstChild);
    if (follow && atBottom) scroller.scrollTop = scroller.scrollHeight;
  }

  /** Remembers the scroll position from the bottom, so older messages added above do not move
   * what the reader is looking at; returns the function that restores it. */
  function keepScroll() {
    const scroller = $('scroller');
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    return () => {
      scroller.scrollTop = scroller.scrollHeight - fromBottom;
    };
  }

  function requestHistory(before) {
    if (olderPending || noOlder || !registered) return;
    olderPending = true;
    const req = { t: 'history', limit: HISTORY_PAGE };
    if (before !== null) req.before = before;
    send(req);
  }

  /** Older messages: before the oldest one shown (or the newest of all when none is). */
  function loadOlder() {
    const first = $('messages').querySelector('.msg[data-id]');
    requestHistory(first ? Number(first.dataset.id) : null);
  }

  function renderMembers(more) {
    const items = memberNames.map((name) => {
      const li = document.createElement('li');
      li.textContent = name;
      li.dataset.name = name;
      if (name === hostName) li.classList.add('host');
      if (name === session.name) li.classList.add('me');
      if (awayTexts.has(name)) {
        // Shown by the style sheet after the name, so the item's text stays the name.
        const text = awayTexts.get(name);
        li.classList.add('away');
        li.dataset.away = text ? 'away: ' + text : 'away';
        li.title = li.dataset.away;
      }
      if (isIgnored(name) && name !== session.name) li.classList.add('ignored');
      return li;
    });
    if (more > 0) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = '+' + more + ' more';
      items.push(li);
    }
    $('members').replaceChildren(...items);
  }

  function showTyping(name) {
    clearTimeout(typingTimers.get(name));
    typingTimers.set(name, setTimeout(() => hideTyping(name), TYPING_SHOWN_MS));
    renderTyping();
  }

  function hideTyping(name) {
    if (!typingTimers.has(name)) return;
    clearTimeout(typingTimers.get(name));
    typingTimers.delete(name);
    renderTyping();
  }

  function renderTyping() {
    const names = [...typingTimers.keys()];
    let text = '';
    if (names.length === 1) text = names[0] + ' is typing…';
    else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
    else if (names.length > 2) text = 'Several people are typing…';
    $('typing').textContent = text;
  }

  function setConn(text) {
    $('conn').textContent = text;
  }

  function setStatus(text) {
    $('status').textContent = text;
    $('status').dataset.state = text;
  }

  // ---------------------------------------------------------------------------------------------
  // What the person does in a room.

  /** `/help`: one line each. */
  const HELP = [
    'Commands:',
    '/me TEXT — an action, shown as * ' + 'yourname TEXT',
    '/msg NAME TEXT — a private message to NAME only',
    '/topic [TEXT] — show the room\'s topic, or set it (/topic - clears it)',
    '/away [TEXT] — mark yourself away (shown in the member list); /back when you return',
    '/ignore [NAME] — hide NAME\'s messages on this page (alone: list); /unignore NAME',
    '/who — ask who is here',
    '/search WORDS — messages with all these words (again: older ones)',
    '/send — share a file (the same as the Share file button)',
    '/get ID — download a shared file, checked against its size and SHA-256 (or press its Download button)',
    '/kick NAME — host only: remove NAME from the room (they may come back)',
    '/ban NAME — host only: remove NAME and refuse their address for the room\'s life',
    '/host NAME — host only: make NAME the host',
    '/next — in a random chat: leave and meet someone new',
    '/quit — leave the room',
    '/help — this list',
    'A line starting with // sends the rest of it starting with /. Tab completes commands and names.',
  ];

  /** The commands, for tab completion. */
  const COMMANDS = ['/me', '/msg', '/topic', '/away', '/back', '/ignore', '/unignore', '/who', '/search',
    '/send', '/get', '/kick', '/ban', '/host', '/next', '/quit', '/help'];

  function sendChat(event) {
    event.preventDefault();
    const input = $('text');
    const line = input.value;
    if (!line.trim() || !session) return;
    input.value = '';
    const trimmed = line.trim();
    if (trimmed.startsWith('//')) {
      queue({ text: trimmed.slice(1) });
    } else if (trimmed.startsWith('/')) {
      command(trimmed);
    } else {
      queue({ text: line });
    }
  }

  /** Queues a chat message (`kind` 'me' or 'dm' with `to`, or plain) to go out with the next
   * seq, saved first so that a reload or reconnect resends it with the same seq. */
  function queue(fields) {
    session.seq += 1;
    const item = Object.assign({ seq: session.seq }, fields);
    session.unacked.push(item);
    saveSession();
    addPending(item);
    $('scroller').scrollTop = $('scroller').scrollHeight;
    // Behind anything still queued; not registered yet: register() sends the whole queue.
    pump();
  }

  /** Sends a request that has no seq (topic, the host's commands, away): only when connected. */
  function request(obj) {
    if (!registered || !ws || ws.readyState !== WebSocket.OPEN) {
      addNotice('Not connected right now: try again in a moment.', 'error-line');
      return;
    }
    spendToken();
    send(obj);
  }

  function usage(text) {
    addNotice(text, 'error-line');
  }

  function command(line) {
    const space = line.search(/\s/);
    const name = (space < 0 ? line.slice(1) : line.slice(1, space)).toLowerCase();
    const rest = space < 0 ? '' : line.slice(space).trim();
    const oneName = () => (rest && !/\s/.test(rest) ? rest : null);
    switch (name) {
      case 'me':
        if (!rest) return usage('usage: /me TEXT, e.g. /me waves');
        return queue({ text: rest, kind: 'me' });
      case 'msg': {
        const split = rest.search(/\s/);
        const to = split < 0 ? '' : rest.slice(0, split);
        const text = split < 0 ? '' : rest.slice(split).trim();
        if (!to || !text) return usage('usage: /msg NAME TEXT, e.g. /msg bob see you at six');
        return queue({ text, kind: 'dm', to });
      }
      case 'topic':
        if (!rest) {
          return addNotice(topic ? 'The topic: ' + topic : 'This room has no topic. /topic TEXT sets one.');
        }
        return request({ t: 'topic', text: rest === '-' ? '' : rest });
      case 'kick':
      case 'ban':
      case 'host':
        if (!oneName()) return usage('usage: /' + name + ' NAME');
        return request({ t: name, name: rest });
      case 'away':
        return request({ t: 'away', text: rest });
      case 'back':
        return request({ t: 'back' });
      case 'who':
        return request({ t: 'who' });
      case 'ignore':
        if (!rest) {
          const list = ignoredNames();
          return addNotice(list.length ? 'Ignoring: ' + list.join(', ') : 'You ignore nobody. /ignore NAME hides NAME\'s messages.');
        }
        if (!oneName()) return usage('usage: /ignore NAME');
        return setIgnored(rest, true);
      case 'unignore':
        if (!oneName()) return usage('usage: /unignore NAME');
        return setIgnored(rest, false);
      case 'search':
        if (!rest) return usage('usage: /search WORDS, e.g. /search cake fridge');
        return search(rest.split(/\s+/).join(' '));
      case 'send':
        // A browser picks the file itself: the page cannot read a path typed here.
        return $('file').click();
      case 'get': {
        const id = (oneName() || '').toLowerCase();
        if (!/^[0-9a-f]{6,64}$/.test(id)) return usage('usage: /get ID, the id in a "shared NAME (SIZE): /get ID" line');
        const button = document.querySelector('#messages button.download[data-file="' + id + '"]');
        if (!button) return usage('No shared file ' + id + ' is shown in this room; scroll back to its line, or check the id.');
        return download(id, button);
      }
      case 'help':
        return addNoticeBlock(HELP);
      case 'quit':
      case 'exit':
        return leaveClicked();
      case 'next':
        if (!session.room.startsWith('pair-')) return usage('/next is for random chats; /quit leaves this room.');
        return newChat();
      default:
        return usage('Unknown command /' + name + ': /help lists them (// sends a line starting with /).');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Ignoring: a list of names in localStorage, compared as the server compares names (roughly:
  // NFKC, then lowercase). Their messages stay in the page, hidden, so /unignore shows them.

  const STORE_IGNORED = 'chat.ignored';

  const nameKey = (name) => name.normalize('NFKC').toLowerCase().normalize('NFKC');

  function ignoredNames() {
    try {
      const list = JSON.parse(localStorage.getItem(STORE_IGNORED) || '[]');
      return Array.isArray(list) ? list.filter((n) => typeof n === 'string') : [];
    } catch (_) {
      return [];
    }
  }

  function isIgnored(name) {
    const key = nameKey(name);
    return ignoredNames().some((n) => nameKey(n) === key);
  }

  function setIgnored(name, on) {
    if (on && nameKey(name) === nameKey(session.name)) return usage('You cannot ignore yourself.');
    const others = ignoredNames().filter((n) => nameKey(n) !== nameKey(name));
    if (on) others.push(name);
    try {
      localStorage.setItem(STORE_IGNORED, JSON.stringify(others));
    } catch (_) {
      // Storage full or disabled: ignored for this page only.
    }
    for (const el of $('messages').querySelectorAll('.msg')) {
      if (el.dataset.from !== undefined && nameKey(el.dataset.from) === nameKey(name) && el.dataset.from !== session.name) {
        el.hidden = on;
      }
    }
    if (on) hideTyping(name);
    renderMembers(0);
    addNotice(on ? 'Ignoring ' + name + ' (on this page; /unignore ' + name + ' to undo)' : 'No longer ignoring ' + name);
  }

  /** Tab: completes a command at the start of the line, or a member's name anywhere. */
  function complete(event) {
    if (event.key !== 'Tab' || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
    const input = $('text');
    const caret = input.selectionStart;
    if (caret !== input.selectionEnd) return;
    const before = input.value.slice(0, caret);
    const word = /\S*$/.exec(before)[0];
    if (!word) return;
    const start = caret - word.length;
    const candidates = start === 0 && word.startsWith('/')
      ? COMMANDS.filter((c) => c.startsWith(word.toLowerCase()))
      : memberNames.filter((n) => n.toLowerCase().startsWith(word.toLowerCase()));
    if (candidates.length === 0) return;
    event.preventDefault();
    let common = candidates[0];
    for (const c of candidates) {
      while (!c.toLowerCase().startsWith(common.toLowerCase())) common = common.slice(0, -1);
    }
    let replacement = common.length >= word.length ? common : word;
    if (candidates.length === 1) replacement += ' ';
    else if (common.length <= word.length) addNotice('Matches: ' + candidates.join(', '));
    input.value = input.value.slice(0, start) + replacement + input.value.slice(caret);
    const at = start + replacement.length;
    input.setSelectionRange(at, at);
  }

  function typed() {
    const now = Date.now();
    if (registered && $('text').value && now - lastTypingSent >= TYPING_EVERY_MS) {
      lastTypingSent = now;
      send({ t: 'typing' });
    }
  }

  /** Leaves the room: over the socket when it is up, else with the API's DELETE. */
  async function leave() {
    if (!session) return;
    if (registered && ws && ws.readyState === WebSocket.OPEN) {
      send({ t: 'leave' });
      const socket = ws;
      ws = null; // close after the leave frame, which is queued first
      socket.onclose = null;
      socket.close();
    } else {
      await api('DELETE', roomPath(session.room) + '/members/me');
    }
    clearSession();
  }

  async function leaveClicked() {
    await leave();
    showLobby('');
  }

  /** "New chat": leave this pair room and be paired again under the same name. */
  async function newChat() {
    const name = session ? session.name : chosenName();
    await leave();
    stopRoom();
    if (name) {
      showLobby('');
      await pair(name);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Shared files (docs/http-api.md, "Shared files"): uploaded and downloaded with the token in
  // the Authorization header, never in a URL. A download is checked against the size and the
  // SHA-256 the server lists before it is handed to the browser to save.

  async function shareFile(file) {
    if (!session) return;
    const room = session.room;
    const token = session.token;
    const note = addNotice('Sharing ' + file.name + '…', 'file-note');
    let res;
    try {
      res = await fetch(urlOf(roomPath(room) + '/files?name=' + encodeURIComponent(file.name)), {
        method: 'POST',
        headers: { authorization: 'Bearer ' + token, 'content-type': 'application/octet-stream' },
        body: file,
      });
    } catch (_) {
      note.textContent = 'Could not share ' + file.name + ': the server cannot be reached.';
      note.classList.add('error-line');
      return;
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      // No JSON body: the status says enough.
    }
    if (res.ok) {
      note.textContent = 'Shared ' + (data && typeof data.name === 'string' ? data.name : file.name);
      // The room's line about it is not sent to its sharer: fetch it now.
      if (session && session.room === room) ping();
    } else {
      const why = data && typeof data.message === 'string' ? data.message : res.status + ' ' + res.statusText;
      note.textContent = 'Could not share ' + file.name + ': ' + why;
      note.classList.add('error-line');
    }
  }

  /** Why a response failed, from its JSON error body when it has one. */
  async function failure(res) {
    try {
      const data = await res.json();
      if (data && typeof data.message === 'string') return new Error(data.message);
    } catch (_) {
      // Not JSON.
    }
    return new Error(res.status + ' ' + res.statusText);
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function downloadState(button, state, text) {
    button.dataset.state = state;
    const el = button.closest('.msg');
    let status = el && el.querySelector('.download-status');
    if (el && !status) {
      status = document.createElement('span');
      status.className = 'download-status';
      el.append(status);
    }
    if (status) {
      status.textContent = text;
      status.classList.toggle('bad', state === 'failed');
    }
  }

  async function download(id, button) {
    if (!session || button.dataset.state === 'busy') return;
    const room = session.room;
    const auth = { authorization: 'Bearer ' + session.token };
    downloadState(button, 'busy', 'downloading…');
    try {
      // The list says what the file should be: its exact size and SHA-256.
      const listed = await fetch(urlOf(roomPath(room) + '/files'), { headers: auth });
      if (!listed.ok) throw await failure(listed);
      const body = await listed.json();
      const files = body && Array.isArray(body.files) ? body.files : [];
      const entry = files.find((f) => f && f.id === id);
      if (!entry || typeof entry.name !== 'string' || !Number.isInteger(entry.size)) {
        throw new Error('this file is no longer shared here');
      }
      const res = await fetch(urlOf(roomPath(room) + '/files/' + encodeURIComponent(id)), { headers: auth });
      if (!res.ok) throw await failure(res);
      const blob = await res.blob();
      if (blob.size !== entry.size) {
        throw new Error('it arrived as ' + blob.size + ' bytes instead of ' + entry.size + '; not saved');
      }
      let checked = 'size checked';
      if (window.crypto && crypto.subtle) {
        const digest = hex(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
        const header = res.headers.get('x-content-sha256');
        if (digest !== String(entry.sha256).toLowerCase() || (header && header.toLowerCase() !== digest)) {
          throw new Error('its SHA-256 does not match; not saved');
        }
        button.dataset.sha256 = digest;
        checked = 'SHA-256 checked';
      }
      button.dataset.size = String(blob.size);
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = entry.name;
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      downloadState(button, 'saved', 'saved (' + checked + ')');
    } catch (e) {
      downloadState(button, 'failed', 'download failed: ' + (e && e.message ? e.message : 'unknown error'));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring.

  function init() {
    $('name').value = localStorage.getItem(STORE_NAME) || '';
    $('name').addEventListener('change', () => localStorage.setItem(STORE_NAME, $('name').value.trim()));
    $('create-form').addEventListener('submit', createRoom);
    $('new-private').addEventListener('change', () => {
      $('new-password').hidden = !$('new-private').checked;
    });
    $('refresh').addEventListener('click', refreshRooms);
    $('random').addEventListener('click', () => {
      const name = chosenName();
      if (name) pair(name);
    });
    $('password-form').addEventListener('submit', (event) => {
      event.preventDefault();
      if (passwordRoom !== null) joinRoom(passwordRoom, $('password').value);
    });
    $('password-cancel').addEventListener('click', () => {
      $('password-form').hidden = true;
      setNotice('');
    });
    $('composer').addEventListener('submit', sendChat);
    $('text').addEventListener('input', typed);
    $('leave').addEventListener('click', leaveClicked);
    $('new-chat').addEventListener('click', newChat);
    $('older').addEventListener('click', loadOlder);
    $('who').addEventListener('click', () => {
      spendToken();
      send({ t: 'who' });
    });
    $('text').addEventListener('keydown', complete);
    $('share').addEventListener('click', () => $('file').click());
    $('file').addEventListener('change', () => {
      const files = Array.from($('file').files || []);
      $('file').value = '';
      for (const file of files) shareFile(file);
    });
    // Near the top while moving up: the reader scrolls back. (Following new messages down, or
    // a list that has only just started to overflow, must not load older pages by itself.)
    let lastScrollTop = 0;
    $('scroller').addEventListener('scroll', () => {
      const top = $('scroller').scrollTop;
      if (top < 40 && top < lastScrollTop) loadOlder();
      lastScrollTop = top;
    });
    // Back online: try now instead of waiting out the backoff.
    window.addEventListener('online', () => {
      if (session && !ws && !parked) connect();
    });

    refreshNodes();
    setInterval(refreshNodes, NODES_REFRESH_MS);
    session = loadSession();
    if (session) {
      $('name').value = session.name;
      showRoom();
    } else {
      showLobby('');
    }
  }

  init();
})();
