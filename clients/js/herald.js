// Herald's browser client: one ES module, no dependencies, no build step.
//
//   import { Herald } from 'https://notify.example.com/client/herald.js';
//   const herald = new Herald({ url: 'https://notify.example.com', getToken });
//   herald.on('notification', (n) => show(n));
//
// What it takes care of (docs/CLIENT.md explains each):
//
// * One stream per browser, not per tab. The tabs of an origin elect a leader
//   with Web Locks; the leader holds the EventSource and relays every event
//   to the other tabs over a BroadcastChannel. When the leader goes (closed,
//   frozen, navigated away), the next tab in the lock's queue takes over at
//   once and resumes from the newest id it has seen itself. Without Web
//   Locks or BroadcastChannel every tab holds its own stream: never both.
// * Exactly once per tab. A tab drops a notification whose id it has
//   already handed out (a resume after a hand-over replays a little).
// * Resume. The newest event id is kept in storage per Herald and user, so
//   a reload resumes where the page stopped.
// * Tokens. `getToken()` is asked before the token expires
//   (`token_expiring`), when the stream ends with `bye: token_expired`, after
//   a failed reconnect, and once when an API call answers 401.
// * Reconnects: at once when the browser comes back online, a tab becomes
//   visible or a page returns from the back/forward cache; otherwise with
//   jittered exponential backoff.

/** An error answered by Herald (or the network: status 0). */
export class HeraldError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'HeraldError';
    this.status = status;
    this.code = code;
  }
}

/** How many notification ids a tab remembers to drop repeats. A resume
 *  replays at most what one hand-over missed: far fewer. */
const SEEN_LIMIT = 1000;
/** Reconnect delays: the first retry after about a second, doubling, at most 30 s. */
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30000;
/** How long the service worker may take to store a token. */
const WORKER_REPLY_MS = 5000;
/** A token this close to its `exp` is refreshed before it is used. */
const TOKEN_MARGIN_S = 5;

/**
 * The delay before reconnect attempt `attempt` (0-based): the base doubled
 * per attempt, capped, then a random part of up to half taken off, so tabs
 * and browsers that lost the same node do not all come back at once.
 * `random` is injectable for tests.
 */
export function backoffDelay(attempt, random = Math.random) {
  const full = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(full * (1 - random() / 2));
}

/** The claims of a JWT, unverified (the server verifies; the client only
 *  reads `sub` and `exp`). `{}` for anything that is not a JWT. */
export function tokenClaims(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(Array.from(atob(payload), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''));
    return JSON.parse(json) ?? {};
  } catch {
    return {};
  }
}

/** The key that tells one notification from another in a tab: ids are
 *  unique per user's inbox and per topic, not across them. */
export function notificationKey(notification) {
  return notification.topic ? `topic:${notification.topic}/${notification.id}` : notification.id;
}

/** A set that forgets its oldest members past `limit`. */
export class RecentSet {
  constructor(limit = SEEN_LIMIT) {
    this.limit = limit;
    this.members = new Set();
  }

  /** Adds `key`; whether it was new. */
  add(key) {
    if (this.members.has(key)) return false;
    this.members.add(key);
    if (this.members.size > this.limit) this.members.delete(this.members.values().next().value);
    return true;
  }
}

/** Storage that works where localStorage does not (a sandboxed frame). */
function defaultStorage() {
  try {
    const probe = '__herald__';
    globalThis.localStorage.setItem(probe, probe);
    globalThis.localStorage.removeItem(probe);
    return globalThis.localStorage;
  } catch {
    const memory = new Map();
    return {
      getItem: (key) => memory.get(key) ?? null,
      setItem: (key, value) => memory.set(key, String(value)),
      removeItem: (key) => memory.delete(key),
    };
  }
}

/** The events a stream carries that the client hands on (docs/API.md). */
const STREAM_EVENTS = ['notification', 'unread', 'read', 'deleted', 'reset', 'token_expiring', 'bye'];

export class Herald {
  #options;
  #listeners = new Map();
  #seen = new RecentSet();
  #token = null;
  #user = null;
  #topics;
  #storage;
  /** The newest event id this tab has handled (from its stream or a relay). */
  #cursor = null;
  #state = 'connecting';
  #reason = undefined;
  #unread = null;
  #leader = false;
  #closed = false;
  #events = null;        // the EventSource, leader only
  #attempt = 0;          // failed reconnects in a row
  #retryTimer = null;
  #channel = null;       // BroadcastChannel, when tabs share one stream
  #abdicate = null;      // releases the leader lock
  #lockAbort = null;     // withdraws from the lock's queue
  #unbind = [];          // removes window/document listeners on close
  #pushRegistration = null;

  constructor(options) {
    if (typeof options?.getToken !== 'function') throw new TypeError('Herald: getToken must be a function');
    const origin = globalThis.location?.origin ?? '';
    this.#options = { crossTab: true, ...options, url: (options.url ?? origin).replace(/\/+$/, '') };
    this.#topics = [...(options.topics ?? [])];
    this.#storage = options.storage ?? defaultStorage();
    this.preferences = {
      get: () => this.#api('GET', '/v1/preferences'),
      put: (preferences) => this.#api('PUT', '/v1/preferences', preferences),
    };
    this.push = this.#pushApi();
    this.#start();
  }

  get state() { return this.#state; }
  get unreadCount() { return this.#unread; }
  get isLeader() { return this.#leader; }

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  #emit(event, value) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        // One broken listener must not stop the others or the stream.
        setTimeout(() => { throw error; });
      }
    }
  }

  // -------------------------------------------------------------------------
  // The notification center: plain API calls, from every tab. Their effects
  // reach every tab through the stream (`read`, `deleted`, `unread`).
  // -------------------------------------------------------------------------

  list({ before, limit, unread } = {}) {
    const query = new URLSearchParams();
    if (before) query.set('before', before);
    if (limit) query.set('limit', String(limit));
    if (unread !== undefined) query.set('unread', String(unread));
    const suffix = query.toString() ? `?${query}` : '';
    return this.#api('GET', `/v1/notifications${suffix}`);
  }

  markRead(ids) {
    return this.#api('POST', '/v1/notifications/read', ids === 'all' ? { all: true } : { ids });
  }

  async markClicked(id) {
    await this.#api('POST', `/v1/notifications/${encodeURIComponent(id)}/clicked`);
  }

  async delete(id) {
    await this.#api('DELETE', `/v1/notifications/${encodeURIComponent(id)}`);
  }

  /** Follows `topics` instead: the leader reopens its stream with its cursor. */
  setTopics(topics) {
    this.#topics = [...topics];
    if (this.#leader) this.#reopen();
    else this.#channel?.postMessage({ kind: 'topics', topics: this.#topics });
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopStream();
    this.#abdicate?.();
    this.#lockAbort?.abort();
    this.#channel?.close();
    for (const unbind of this.#unbind) unbind();
    this.#setState('offline', 'closed');
  }

  /** A call to Herald's API with the token; on 401 once more with a fresh one. */
  async #api(method, path, body) {
    let token = await this.#currentToken();
    for (let tries = 0; ; tries += 1) {
      let response;
      try {
        const headers = { Authorization: `Bearer ${token}` };
        if (body !== undefined) headers['Content-Type'] = 'application/json';
        response = await fetch(`${this.#options.url}${path}`, {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (error) {
        throw new HeraldError(0, 'network', `${method} ${path}: ${error.message}`);
      }
      if (response.status === 401 && tries === 0) {
        token = await this.#currentToken({ fresh: true });
        continue;
      }
      const json = response.status === 204 ? null : await response.json().catch(() => null);
      if (!response.ok) {
        const error = json?.error ?? {};
        throw new HeraldError(response.status, error.code ?? 'http_error', error.message ?? `${method} ${path}: ${response.status}`);
      }
      return json;
    }
  }

  // -------------------------------------------------------------------------
  // Tokens.
  // -------------------------------------------------------------------------

  /** The token, asked for anew when `fresh` or when it is about to expire. */
  async #currentToken({ fresh = false } = {}) {
    const exp = this.#token && tokenClaims(this.#token).exp;
    const expiring = typeof exp === 'number' && exp - TOKEN_MARGIN_S < Date.now() / 1000;
    if (fresh || !this.#token || expiring) {
      const token = await this.#options.getToken();
      if (typeof token !== 'string' || !token) throw new HeraldError(0, 'no_token', 'getToken() returned no token');
      this.#token = token;
      // A worker that cannot take it keeps the old one: a click then falls
      // back to the tab marking it (see sw.js).
      this.#handWorkerTheToken().catch(() => {});
    }
    return this.#token;
  }

  // -------------------------------------------------------------------------
  // Start: who holds the stream.
  // -------------------------------------------------------------------------

  async #start() {
    try {
      await this.#currentToken();
    } catch (error) {
      this.#setState('offline', 'token');
      this.#emit('error', error);
      this.#scheduleReconnect(() => this.#start());
      return;
    }
    if (this.#closed) return;
    this.#user = this.#options.user ?? tokenClaims(this.#token).sub ?? 'anonymous';
    this.#cursor = this.#storage.getItem(this.#cursorKey());
    this.#listenToTheBrowser();
    const shared = this.#options.crossTab && globalThis.navigator?.locks && typeof BroadcastChannel === 'function';
    if (!shared) {
      this.#becomeLeader();
      return;
    }
    this.#channel = new BroadcastChannel(this.#channelName());
    this.#channel.onmessage = (event) => this.#onRelay(event.data);
    this.#joinElection();
    // A tab that joins asks the leader where things stand.
    this.#channel.postMessage({ kind: 'hello' });
  }

  #cursorKey() { return `herald:cursor:${this.#options.url}:${this.#user}`; }
  #channelName() { return `herald:${this.#options.url}:${this.#user}`; }

  /** Queues for the leader lock; holds it, once granted, until abdicating. */
  #joinElection() {
    if (this.#closed || this.#lockAbort) return;
    const abort = new AbortController();
    this.#lockAbort = abort;
    navigator.locks.request(this.#channelName(), { signal: abort.signal }, () => new Promise((release) => {
      this.#abdicate = () => {
        this.#abdicate = null;
        this.#leader = false;
        this.#stopStream();
        release();
      };
      this.#becomeLeader();
    })).catch(() => { /* withdrawn from the queue (frozen or closed) */ }).finally(() => {
      if (this.#lockAbort === abort) this.#lockAbort = null;
    });
  }

  /** Leaves the election: the leader hands the stream to the next tab. */
  #leaveElection() {
    this.#abdicate?.();
    this.#lockAbort?.abort();
    this.#lockAbort = null;
  }

  #becomeLeader() {
    if (this.#closed) return;
    this.#leader = true;
    this.#attempt = 0;
    this.#open();
  }

  /** Reconnects promptly on the browser's own signals; steps aside when the
   *  page is frozen or hidden in the back/forward cache. */
  #listenToTheBrowser() {
    const on = (target, event, handler) => {
      if (!target?.addEventListener) return;
      target.addEventListener(event, handler);
      this.#unbind.push(() => target.removeEventListener(event, handler));
    };
    const promptly = () => { if (this.#leader && this.#state !== 'open') this.#reconnectNow(); };
    on(globalThis, 'online', promptly);
    on(globalThis, 'offline', () => { if (this.#leader) this.#setState('offline', 'browser_offline'); });
    on(globalThis.document, 'visibilitychange', () => { if (document.visibilityState === 'visible') promptly(); });
    // A frozen or cached page cannot run its stream: another tab takes it.
    const stepAside = () => {
      if (this.#channel) this.#leaveElection();
      else this.#stopStream();
    };
    const comeBack = () => {
      if (this.#closed) return;
      if (this.#channel) this.#joinElection();
      else this.#reconnectNow();
    };
    on(globalThis.document, 'freeze', stepAside);
    on(globalThis.document, 'resume', comeBack);
    on(globalThis, 'pagehide', (event) => { if (event.persisted) stepAside(); });
    on(globalThis, 'pageshow', (event) => { if (event.persisted) comeBack(); });
  }

  // -------------------------------------------------------------------------
  // The leader's stream.
  // -------------------------------------------------------------------------

  #streamUrl() {
    const query = new URLSearchParams({ access_token: this.#token });
    if (this.#cursor) query.set('last_event_id', this.#cursor);
    if (this.#topics.length) query.set('topics', this.#topics.join(','));
    return `${this.#options.url}/v1/events?${query}`;
  }

  async #open() {
    this.#stopStream();
    if (this.#closed || !this.#leader) return;
    if (globalThis.navigator?.onLine === false) {
      this.#setState('offline', 'browser_offline');
      return;    // the `online` event reconnects
    }
    this.#setState(this.#attempt === 0 && this.#state === 'connecting' ? 'connecting' : 'reconnecting', this.#reason);
    try {
      // After a failure the token may be why: ask for a fresh one.
      await this.#currentToken({ fresh: this.#attempt > 0 });
    } catch (error) {
      this.#setState('offline', 'token');
      this.#emit('error', error);
      this.#scheduleReconnect();
      return;
    }
    if (this.#closed || !this.#leader) return;
    const events = new EventSource(this.#streamUrl());
    this.#events = events;
    for (const name of STREAM_EVENTS) {
      events.addEventListener(name, (event) => {
        if (this.#events !== events) return;    // a stream already replaced
        this.#onStreamEvent(name, event.data, event.lastEventId);
      });
    }
    events.onopen = () => {
      if (this.#events !== events) return;
      this.#attempt = 0;
      this.#setState('open');
    };
    // EventSource would retry by itself with the same URL: a stale token and
    // cursor. The client closes it and reconnects itself.
    events.onerror = () => {
      if (this.#events !== events) return;
      this.#stopStream();
      this.#setState('reconnecting', 'network');
      this.#scheduleReconnect();
    };
  }

  #stopStream() {
    this.#events?.close();
    this.#events = null;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  #scheduleReconnect(then = () => this.#open()) {
    clearTimeout(this.#retryTimer);
    if (this.#closed) return;
    const delay = backoffDelay(this.#attempt);
    this.#attempt += 1;
    this.#retryTimer = setTimeout(then, delay);
  }

  #reconnectNow() {
    if (this.#closed || !this.#leader) return;
    this.#attempt = Math.min(this.#attempt, 1);    // a fresh token, no wait
    this.#open();
  }

  /** Reopens with the cursor: new token or new topics. */
  async #reopen({ freshToken = false } = {}) {
    if (freshToken) {
      try {
        await this.#currentToken({ fresh: true });
      } catch (error) {
        this.#emit('error', error);
      }
    }
    this.#open();
  }

  #onStreamEvent(name, raw, id) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return;    // not Herald's: ignore
    }
    if (name === 'token_expiring') {
      this.#reopen({ freshToken: true });
      return;
    }
    if (name === 'bye') {
      this.#stopStream();
      if (data.reason === 'token_expired') {
        this.#reopen({ freshToken: true });
      } else {
        this.#setState('reconnecting', data.reason);
        this.#scheduleReconnect();
      }
      return;
    }
    // Relayed first, stored second: a leader that dies in between leaves a
    // cursor older than what the others got, and their dedupe absorbs the
    // replay; the other order could lose an event.
    this.#channel?.postMessage({ kind: 'event', name, data, id });
    this.#deliver(name, data, id);
    if (id) this.#storage.setItem(this.#cursorKey(), id);
  }

  // -------------------------------------------------------------------------
  // Every tab: events from its own stream or the leader's relay.
  // -------------------------------------------------------------------------

  #onRelay(message) {
    if (this.#closed || !message) return;
    switch (message.kind) {
      case 'event':
        if (!this.#leader) this.#deliver(message.name, message.data, message.id);
        break;
      case 'state':
        if (!this.#leader) {
          this.#setState(message.state, message.reason);
          // A tab that joins an open stream learns the count here, not
          // from an `unread` event of its own.
          if (message.unread != null && message.unread !== this.#unread) {
            this.#unread = message.unread;
            this.#emit('unread', { count: message.unread });
          }
        }
        break;
      case 'hello':
        if (this.#leader) this.#broadcastState();
        break;
      case 'topics':
        // Every tab keeps the topics: whichever leads next opens with them.
        this.#topics = message.topics;
        if (this.#leader) this.#reopen();
        break;
      default:
    }
  }

  #deliver(name, data, id) {
    if (id) this.#cursor = id;
    switch (name) {
      case 'notification':
        if (this.#seen.add(notificationKey(data))) this.#emit('notification', data);
        break;
      case 'unread':
        this.#unread = data.count;
        this.#emit('unread', data);
        break;
      case 'reset':
        this.#onReset(data);
        break;
      default:
        this.#emit(name, data);
    }
  }

  /** The list a page shows is no longer right: refetch its first page. */
  async #onReset(data) {
    let page = null;
    try {
      page = data.scope === 'inbox' || !data.scope ? await this.list() : null;
    } catch (error) {
      this.#emit('error', error);
    }
    this.#emit('reset', { ...data, page });
  }

  #setState(state, reason) {
    const changed = state !== this.#state || reason !== this.#reason;
    this.#state = state;
    this.#reason = state === 'open' ? undefined : reason;
    if (this.#leader) this.#broadcastState();
    if (changed) this.#emit('state', { state, ...(this.#reason && { reason: this.#reason }) });
  }

  #broadcastState() {
    this.#channel?.postMessage({ kind: 'state', state: this.#state, reason: this.#reason, unread: this.#unread });
  }

  // -------------------------------------------------------------------------
  // Web Push: subscribing a service worker registration, and its clicks.
  // -------------------------------------------------------------------------

  #pushApi() {
    const supported = typeof navigator !== 'undefined' && 'serviceWorker' in navigator
      && typeof PushManager === 'function' && typeof Notification === 'function';
    if (supported) {
      const onMessage = (event) => {
        const message = event.data;
        if (message?.type !== 'herald:notificationclick') return;
        if (!message.marked && message.id && !message.topic) {
          this.markClicked(message.id).catch((error) => this.#emit('error', error));
        }
        this.#emit('notificationclick', {
          id: message.id ?? null, url: message.url ?? null, topic: message.topic ?? null, marked: Boolean(message.marked),
        });
      };
      navigator.serviceWorker.addEventListener('message', onMessage);
      this.#unbind.push(() => navigator.serviceWorker.removeEventListener('message', onMessage));
    }
    return {
      supported,
      // Call it when the page starts: with a subscription, the worker is
      // then handed every new token.
      subscription: async (registration) => {
        const subscription = await registration.pushManager.getSubscription();
        if (subscription) {
          this.#pushRegistration = registration;
          await this.#handWorkerTheToken();
        }
        return subscription ?? null;
      },
      subscribe: async (registration) => {
        if (!supported) throw new HeraldError(0, 'push_unsupported', 'this browser cannot take Web Push');
        if (Notification.permission !== 'granted' && await Notification.requestPermission() !== 'granted') {
          throw new HeraldError(0, 'push_denied', 'notifications are not allowed for this site');
        }
        const { public_key: key } = await this.#api('GET', '/v1/push/vapid_public_key');
        const subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: base64urlBytes(key),
        });
        await this.#api('POST', '/v1/push/subscriptions', subscription.toJSON());
        this.#pushRegistration = registration;
        await this.#handWorkerTheToken();
        return subscription;
      },
      unsubscribe: async (registration) => {
        const subscription = await registration.pushManager.getSubscription();
        if (subscription) {
          await this.#api('DELETE', '/v1/push/subscriptions', { endpoint: subscription.endpoint });
          await subscription.unsubscribe();
        }
        this.#pushRegistration = registration;
        await this.#handWorkerTheToken(null);
        this.#pushRegistration = null;
      },
    };
  }

  /** Gives the service worker the token (or `null`: forget it), so a click
   *  on a push can mark it clicked; resolves once the worker stored it. */
  async #handWorkerTheToken(token = this.#token) {
    const registration = this.#pushRegistration;
    const worker = registration?.active ?? registration?.waiting ?? registration?.installing;
    if (!worker) return;
    const reply = new MessageChannel();
    const stored = new Promise((resolve) => { reply.port1.onmessage = (event) => resolve(event.data); });
    worker.postMessage({ type: 'herald:token', token, url: this.#options.url }, [reply.port2]);
    // A worker without Herald's message handler never answers: give up
    // rather than hang the caller.
    const answer = await Promise.race([stored, new Promise((resolve) => setTimeout(resolve, WORKER_REPLY_MS, null))]);
    if (!answer?.ok) throw new HeraldError(0, 'push_worker', `the service worker did not keep the token: ${answer?.error}`);
  }
}

function base64urlBytes(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
}
