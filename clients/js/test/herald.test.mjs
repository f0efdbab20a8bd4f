// The client's state machine in Node, with a stand-in EventSource that the
// test drives: dedupe, cursor keeping, token renewal, backoff. The real
// browser cases (tabs, locks, relays, reloads, failover) are in
// tests/browser/client.test.mjs.
//
//   node --test clients/js/test/

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { Herald, RecentSet, backoffDelay, notificationKey, tokenClaims } from '../herald.js';

/** Every stream the client opens, in order; the test plays the server. */
const streams = [];

class FakeEventSource {
  constructor(url) {
    this.url = new URL(url);
    this.listeners = new Map();
    this.closed = false;
    streams.push(this);
  }

  addEventListener(name, listener) { this.listeners.set(name, listener); }

  close() { this.closed = true; }

  /** The server sends an event. */
  emit(name, data, lastEventId = '') {
    this.listeners.get(name)?.({ data: JSON.stringify(data), lastEventId });
  }
}

globalThis.EventSource = FakeEventSource;

function jwt(claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'HS256' })}.${encode(claims)}.signature`;
}

function memoryStorage() {
  const items = new Map();
  return { items, getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v), removeItem: (k) => items.delete(k) };
}

async function until(condition, what) {
  const deadline = Date.now() + 2000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A client for alice with no tabs to share with (Node has no Web Locks). */
async function startClient(storage = memoryStorage()) {
  let tokens = 0;
  const opened = streams.length;
  const herald = new Herald({
    url: 'https://notify.example.com/',
    getToken: () => { tokens += 1; return jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600, n: tokens }); },
    storage,
  });
  const seen = [];
  herald.on('notification', (n) => seen.push(n.id));
  await until(() => streams.length === opened + 1, 'its stream');
  return { herald, seen, storage, tokens: () => tokens };
}

afterEach(() => { streams.length = 0; });

test('a notification seen twice (a replay after a hand-over) is handed out once', async () => {
  const { herald, seen } = await startClient();
  const [stream] = streams;

  stream.emit('notification', { id: '1-0', title: 'a' }, '1-0');
  stream.emit('notification', { id: '2-0', title: 'b' }, '2-0');
  stream.emit('notification', { id: '1-0', title: 'a' }, '1-0');
  // A topic's notification may share an id with the inbox's: both count.
  stream.emit('notification', { id: '1-0', title: 'c', topic: 'news' }, 'composite');

  assert.deepEqual(seen, ['1-0', '2-0', '1-0']);
  herald.close();
});

test('the stream opens at Herald\'s URL with the token, and the cursor is kept per user', async () => {
  const storage = memoryStorage();
  const { herald } = await startClient(storage);
  const [stream] = streams;
  assert.equal(stream.url.origin + stream.url.pathname, 'https://notify.example.com/v1/events');
  assert.equal(tokenClaims(stream.url.searchParams.get('access_token')).sub, 'alice');
  assert.equal(stream.url.searchParams.get('last_event_id'), null, 'a first visit starts live');

  stream.emit('unread', { count: 0 }, '5-0');
  stream.emit('notification', { id: '6-0', title: 'a' }, '6-0');
  assert.equal(storage.getItem('herald:cursor:https://notify.example.com:alice'), '6-0');
  assert.equal(herald.unreadCount, 0);
  herald.close();

  // A reload: the next client resumes after it.
  const again = await startClient(storage);
  assert.equal(streams[1].url.searchParams.get('last_event_id'), '6-0');
  again.herald.close();
});

test('token_expiring and bye: token_expired bring a fresh token and a resumed stream', async () => {
  const { herald, tokens } = await startClient();
  streams[0].emit('notification', { id: '7-0', title: 'a' }, '7-0');
  const before = tokens();

  streams[0].emit('token_expiring', { expires_at: '2026-12-05T12:00:00Z' });

  await until(() => streams.length === 2, 'a second stream');
  assert.equal(streams[0].closed, true);
  assert.ok(tokens() > before, 'getToken was asked');
  assert.equal(streams[1].url.searchParams.get('last_event_id'), '7-0');
  assert.notEqual(streams[1].url.searchParams.get('access_token'), streams[0].url.searchParams.get('access_token'));

  streams[1].emit('bye', { reason: 'token_expired' });
  await until(() => streams.length === 3, 'a third stream');
  assert.equal(streams[2].url.searchParams.get('last_event_id'), '7-0');
  herald.close();
});

test('a broken stream is closed and retried by the client, and says so', async () => {
  const { herald } = await startClient();
  const states = [];
  herald.on('state', ({ state, reason }) => states.push(`${state}:${reason}`));

  streams[0].onerror();

  assert.equal(streams[0].closed, true, 'EventSource must not retry with a stale URL');
  assert.deepEqual(states, ['reconnecting:network']);
  await until(() => streams.length === 2, 'a retry');
  streams[1].onopen();
  assert.equal(herald.state, 'open');
  herald.close();
  assert.equal(herald.state, 'offline');
});

test('a reset hands the page the first page of the list, refetched', async () => {
  const requests = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    requests.push(`${init.method} ${url} ${init.headers.Authorization.slice(0, 7)}`);
    return new Response(JSON.stringify({ items: [{ id: '9-0' }], unread_count: 1, next: null }), { status: 200 });
  };
  try {
    const { herald } = await startClient();
    const resets = [];
    herald.on('reset', (reset) => resets.push(reset));

    streams[0].emit('reset', { reason: 'history_trimmed', scope: 'inbox' });

    await until(() => resets.length === 1, 'the reset');
    assert.deepEqual(requests, ['GET https://notify.example.com/v1/notifications Bearer ']);
    assert.deepEqual(resets[0], { reason: 'history_trimmed', scope: 'inbox', page: { items: [{ id: '9-0' }], unread_count: 1, next: null } });
    herald.close();
  } finally {
    globalThis.fetch = realFetch;
  }
});

test('backoff doubles from about a second, capped at 30 s, never below half', () => {
  assert.equal(backoffDelay(0, () => 0), 1000);
  assert.equal(backoffDelay(0, () => 1), 500);
  assert.equal(backoffDelay(3, () => 0), 8000);
  assert.equal(backoffDelay(20, () => 0), 30000);
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const delay = backoffDelay(attempt);
    const full = Math.min(30000, 1000 * 2 ** attempt);
    assert.ok(delay >= full / 2 && delay <= full, `${attempt}: ${delay}`);
  }
});

test('the recent set forgets its oldest ids past its limit', () => {
  const recent = new RecentSet(2);
  assert.equal(recent.add('a'), true);
  assert.equal(recent.add('a'), false);
  recent.add('b');
  recent.add('c');
  assert.equal(recent.add('a'), true, 'forgotten');
  assert.equal(recent.add('c'), false);
});

test('token claims are read without verifying; garbage reads as none', () => {
  assert.deepEqual(tokenClaims(jwt({ sub: 'zoë', exp: 1 })), { sub: 'zoë', exp: 1 });
  assert.deepEqual(tokenClaims('not a token'), {});
  assert.equal(notificationKey({ id: '1-0' }), '1-0');
  assert.equal(notificationKey({ id: '1-0', topic: 'news' }), 'topic:news/1-0');
});
