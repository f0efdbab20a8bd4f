'use strict';

// ---------------------------------------------------------------------------
// State. Everything the page shows is derived from these.
// ---------------------------------------------------------------------------

const PAGE_SIZE = 20;       // items per list page (the API allows 1 to 100)
const MAX_TOASTS = 3;       // older toasts make room for newer ones
const TOAST_MS = 6000;      // how long a toast stays (twice that for high priority)

const state = {
  user: null,
  /** {user, token, publisher_token, expires_at} from POST /demo/session. */
  session: null,
  /** The client library's Herald; events from a replaced one are ignored. */
  herald: null,
  /** Whether `session` is fresh from startAs, not yet handed to the client. */
  sessionUnused: false,
  /** The public topics this gateway offers (from the session). */
  offered: [],
  /** The topics this stream follows (kept in localStorage). */
  followed: new Set(),
  /** Sources (see `sources()`) to (re)fetch once the stream is open. */
  stale: new Set(),
  /** Notifications shown, by key (`keyOf`): {notification, element}. */
  items: new Map(),
  /** Per source, the list API's cursor for its next, older page; a source
   *  on its last page has none. */
  next: new Map(),
  preferences: null,
  audio: null,
};

const $ = (id) => document.getElementById(id);
const store = {
  get: (key, fallback) => localStorage.getItem(`herald-demo:${key}`) ?? fallback,
  set: (key, value) => localStorage.setItem(`herald-demo:${key}`, value),
};

// ---------------------------------------------------------------------------
// HTTP, for what the client library does not do: the demo's session, a
// topic's list and the send form (a publisher's call). Every error the API
// returns is {"error": {"code", "message"}}.
// ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, { body, token = state.session?.token } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await response.json().catch(() => null);
  if (!response.ok) {
    const error = json?.error ?? {};
    throw new ApiError(response.status, error.code, error.message ?? `${response.status} ${response.statusText}`);
  }
  return json;
}

/** Demo mode only: tokens for `user`, minted by this node. A real app gets
 *  its user's token from its own backend. */
function newSession(user) {
  return request('POST', '/demo/session', { body: { user }, token: null });
}

function showStatus(element, text, kind = '') {
  element.textContent = text;
  element.className = `status ${kind}`;
}

// ---------------------------------------------------------------------------
// The event stream.
// ---------------------------------------------------------------------------

/** The client library, loaded once (this page is a classic script). */
const library = import('/client/herald.js');

/**
 * Starts the client library for the current user: it holds one stream for
 * all of this browser's tabs, resumes from its stored cursor, renews the
 * token and reconnects (docs/CLIENT.md). The page only renders its events.
 */
async function connect() {
  const { Herald } = await library;
  state.herald?.close();
  const herald = new Herald({
    user: state.user,
    topics: [...state.followed],
    // The session startAs fetched serves first; later ones are new sessions.
    getToken: async () => {
      if (state.sessionUnused) {
        state.sessionUnused = false;
        return state.session.token;
      }
      const user = state.user;
      const session = await newSession(user);
      if (user === state.user) state.session = session;
      return session.token;
    },
  });
  state.herald = herald;
  const on = (event, handle) => herald.on(event, (value) => { if (state.herald === herald) handle(value); });
  on('state', ({ state: connection, reason }) => setConnection(connection, reason));

  // The stream opens with the unread count. Fetching a list only now leaves
  // no gap: anything published after this point comes on the stream,
  // anything before is in the list, and what is in both is shown once
  // (items are kept by key).
  on('unread', ({ count }) => {
    setUnread(count);
    const stale = [...state.stale];
    state.stale.clear();
    stale.forEach(reloadSource);
  });
  on('notification', (notification) => {
    const isNew = !state.items.has(keyOf(notification));
    upsert(notification);
    // A topic's notifications have no read state: each one is news.
    if (isNew && (notification.topic || !notification.read)) {
      toast(notification);
      beep();
    }
  });
  // Another tab (or this one, or another device) marked something read.
  on('read', (read) => {
    for (const item of state.items.values()) {
      const n = item.notification;
      if (n.topic) continue;    // `read` is about the inbox
      const hit = read.all ? compareIds(n.id, read.up_to) <= 0 : read.ids.includes(n.id);
      if (hit && !n.read) upsert({ ...n, read: true });
    }
  });
  on('deleted', ({ ids }) => ids.forEach(remove));
  // What we show of a part of the history may have holes. `scope` names
  // the part; refetch it.
  on('reset', ({ scope }) => {
    if (sources().includes(scope)) reloadSource(scope);
    else sources().forEach(reloadSource);
  });
  on('error', (error) => showStatus($('center-status'), error.message, 'error'));
}

function setConnection(connection, detail) {
  const element = $('connection');
  element.dataset.state = connection;
  element.textContent = detail ? `${connection} (${detail})` : connection;
}

// ---------------------------------------------------------------------------
// The list, the badge and the title.
// ---------------------------------------------------------------------------

/**
 * Notification ids are `<ms>-<seq>` (docs/API.md) and grow with time, so they
 * order the list. (The stream's cursor is a different thing and stays opaque.)
 */
function compareIds(a, b) {
  const [aMs, aSeq] = a.split('-').map(BigInt);
  const [bMs, bSeq] = b.split('-').map(BigInt);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : (aSeq < bSeq ? -1 : 1);
}

// What the list shows comes from sources: the inbox, and each followed
// topic's history. A source's name is the `scope` a `reset` event gives.

const INBOX = 'inbox';
const topicSource = (name) => `topic:${name}`;
const sources = () => [INBOX, ...[...state.followed].map(topicSource)];
const sourceOf = (n) => (n.topic ? topicSource(n.topic) : INBOX);

/** A topic's ids and the inbox's come from different streams and may be
 *  equal; an inbox id has no `:`, so this key cannot collide. */
const keyOf = (n) => (n.topic ? `${topicSource(n.topic)}/${n.id}` : n.id);

function listPath(source) {
  if (source === INBOX) return '/v1/notifications';
  return `/v1/topics/${encodeURIComponent(source.slice('topic:'.length))}/notifications`;
}

/** Drops what is shown from `source` and fetches its newest page again. */
async function reloadSource(source) {
  // Cleared before the request, not after: notifications that arrive on the
  // stream meanwhile stay, and the page merges in by key.
  for (const [key, item] of state.items) {
    if (sourceOf(item.notification) === source) remove(key);
  }
  state.next.delete(source);
  await loadPage(source, null);
}

async function loadPage(source, before) {
  const user = state.user;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (before) params.set('before', before);
  $('load-more').disabled = true;
  $('list').setAttribute('aria-busy', 'true');
  try {
    const page = await request('GET', `${listPath(source)}?${params}`);
    // The user was switched, or the topic unfollowed, meanwhile.
    if (user !== state.user || !sources().includes(source)) return;
    page.items.forEach(upsert);
    if (page.next) state.next.set(source, page.next);
    else state.next.delete(source);
    showStatus($('center-status'), '');
  } catch (error) {
    showStatus($('center-status'), `Could not load notifications: ${error.message}`, 'error');
  } finally {
    $('load-more').disabled = false;
    $('list').setAttribute('aria-busy', 'false');
    $('load-more').hidden = state.next.size === 0;
    $('empty').hidden = state.items.size > 0;
  }
}

/** Shows a notification, or updates the one with its key, newest first. */
function upsert(notification) {
  const key = keyOf(notification);
  const existing = state.items.get(key);
  const element = renderItem(notification);
  if (existing) {
    existing.element.replaceWith(element);
  } else {
    // Newest first: before the first item that is older. A live one is the
    // newest, so this stops at the first element.
    const list = $('list');
    let before = null;
    for (const other of list.children) {
      if (compareIds(other.dataset.id, notification.id) < 0) { before = other; break; }
    }
    list.insertBefore(element, before);
  }
  state.items.set(key, { notification, element });
  $('empty').hidden = true;
}

function remove(key) {
  const item = state.items.get(key);
  if (!item) return;
  item.element.remove();
  state.items.delete(key);
  $('empty').hidden = state.items.size > 0;
}

/** Builds a DOM node. Strings become text nodes: notification text is data,
 *  never markup (no innerHTML anywhere on this page). */
function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(element.dataset, value);
    else element[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);   // append(string) adds a text node
  }
  return element;
}

/** The label a topic's notification carries, in the list and its toast. */
function topicLabel(n) {
  return n.topic ? el('span', { className: 'topic-label' }, n.topic) : null;
}

/** "just now", "2 min ago", "3 h ago", "4 d ago", then the date. */
function relativeTime(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  if (seconds < 7 * 86400) return `${Math.round(seconds / 86400)} d ago`;
  return new Date(iso).toLocaleDateString();
}

/** A <time> that says how long ago, with the exact time on hover. */
function timeAgo(iso) {
  const element = el('time', { dateTime: iso, title: new Date(iso).toLocaleString(), textContent: relativeTime(iso) });
  element.dataset.at = iso;
  return element;
}

// Relative times age: refresh them twice a minute.
setInterval(() => {
  for (const element of document.querySelectorAll('time[data-at]')) element.textContent = relativeTime(element.dataset.at);
}, 30000);

/** The notification's icon (an `https:` or same-origin URL), or nothing. */
function iconOf(n) {
  return n.icon ? el('img', { className: 'icon', src: n.icon, alt: '', width: 20, height: 20 }) : null;
}

/** A click on a row: mark it clicked, and open its page in a new tab. */
function openNotification(n) {
  markClicked(n.id);
  if (n.url) window.open(new URL(n.url, location.href).href, '_blank', 'noopener');
}

function renderItem(n) {
  if (n.topic) {
    // A broadcast: nothing to mark or delete for this user.
    const meta = [n.type, n.url && `→ ${n.url}`].filter(Boolean).join(' · ');
    return el('li', {
      className: ['topic', n.priority === 'high' ? 'high' : ''].join(' ').trim(),
      dataset: { id: n.id, topic: n.topic },
    },
    el('span', { className: 'title' }, topicLabel(n), n.title),
    n.body ? el('span', { className: 'body' }, n.body) : null,
    el('span', { className: 'meta' }, timeAgo(n.created_at), ` · ${meta}`));
  }
  const meta = [n.type, n.url && `→ ${n.url}`, n.clicked && 'clicked'].filter(Boolean).join(' · ');
  const deleteButton = el('button', { type: 'button', className: 'delete', title: 'Delete', textContent: '✕' });
  deleteButton.setAttribute('aria-label', 'Delete');
  deleteButton.addEventListener('click', (event) => {
    event.stopPropagation();
    deleteNotification(n.id);
  });
  const item = el('li', {
    className: [n.read ? 'read' : 'unread', n.priority === 'high' ? 'high' : ''].join(' ').trim(),
    dataset: { id: n.id, read: String(n.read), clicked: String(n.clicked) },
    title: 'Click to mark it clicked (and read)',
  },
  el('span', { className: 'title' }, iconOf(n), n.title),
  deleteButton,
  n.body ? el('span', { className: 'body' }, n.body) : null,
  el('span', { className: 'meta' }, timeAgo(n.created_at), ` · ${meta}`));
  // A row is a control: reachable with Tab, pressed with Enter or Space.
  item.tabIndex = 0;
  item.setAttribute('role', 'button');
  item.addEventListener('click', () => openNotification(n));
  item.addEventListener('keydown', (event) => {
    if (event.target === item && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      openNotification(n);
    }
  });
  return item;
}

function setUnread(count) {
  const badge = $('badge');
  badge.textContent = count > 99 ? '99+' : String(count);
  badge.hidden = count === 0;
  badge.dataset.count = String(count);
  $('unread-text').textContent = count ? `${count} unread` : '';
  document.title = count ? `(${count}) Herald demo` : 'Herald demo';
}

// Actions. The stream tells every tab of the user, this one included, what
// changed (`read`, `deleted`, then `unread` with the exact count); this tab
// updates its own item at once rather than wait for that round trip.

async function markClicked(id) {
  try {
    await state.herald.markClicked(id);
    const item = state.items.get(id);
    if (item) upsert({ ...item.notification, read: true, clicked: true });
  } catch (error) {
    showStatus($('center-status'), `Could not mark it read: ${error.message}`, 'error');
  }
}

async function deleteNotification(id) {
  try {
    await state.herald.delete(id);
    remove(id);
  } catch (error) {
    showStatus($('center-status'), `Could not delete it: ${error.message}`, 'error');
  }
}

$('mark-all').addEventListener('click', async () => {
  try {
    await state.herald.markRead('all');
  } catch (error) {
    showStatus($('center-status'), `Could not mark all read: ${error.message}`, 'error');
  }
});

$('load-more').addEventListener('click', () => {
  for (const [source, next] of state.next) loadPage(source, next);
});

// The bell opens the panel under the header; Escape closes it and gives the
// focus back to the bell. Whether it is open survives a reload of the tab.
function showPanel(open) {
  const center = $('center');
  center.hidden = !open;
  $('bell').setAttribute('aria-expanded', String(open));
  sessionStorage.setItem('herald-demo:panel', open ? 'open' : 'closed');
  if (open) {
    // Below the header, whose height changes as it wraps on a phone.
    center.style.top = `${Math.round(document.querySelector('header').getBoundingClientRect().bottom) + 8}px`;
    $('center-heading').focus();
  }
}

$('bell').addEventListener('click', () => showPanel($('center').hidden));
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && !$('center').hidden) {
    showPanel(false);
    $('bell').focus();
  }
});
showPanel(sessionStorage.getItem('herald-demo:panel') === 'open');

// Infinite scroll: when "Load more" scrolls into the panel, it loads the
// next, older page by itself (the button stays, for the keyboard).
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting) && !$('load-more').hidden && !$('load-more').disabled) {
    $('load-more').click();
  }
}, { root: $('center') }).observe($('load-more'));

// ---------------------------------------------------------------------------
// Toasts and sound.
// ---------------------------------------------------------------------------

function toast(n) {
  const box = $('toasts');
  while (box.children.length >= MAX_TOASTS) box.firstElementChild.remove();
  const close = el('button', { type: 'button', textContent: '✕' });
  close.setAttribute('aria-label', 'Dismiss');
  const element = el('div', { className: `toast ${n.priority}`, dataset: { id: n.id } },
    el('span', { className: 'title' }, topicLabel(n), n.title),
    close,
    n.body ? el('span', { className: 'body' }, n.body) : null);
  close.addEventListener('click', () => element.remove());
  box.append(element);
  // The countdown stops while the pointer or the focus is on the toast, so
  // nobody loses a toast they are reading.
  let left = n.priority === 'high' ? 2 * TOAST_MS : TOAST_MS;
  let started = Date.now();
  let timer = setTimeout(() => element.remove(), left);
  const pause = () => {
    clearTimeout(timer);
    left -= Date.now() - started;
  };
  const resume = () => {
    started = Date.now();
    timer = setTimeout(() => element.remove(), Math.max(left, 1000));
  };
  element.addEventListener('mouseenter', pause);
  element.addEventListener('mouseleave', resume);
  element.addEventListener('focusin', pause);
  element.addEventListener('focusout', resume);
}

/** A short beep, if this browser's toggle is on and the user's preferences
 *  allow sound. Browsers only let audio start after a user gesture, which is
 *  why the AudioContext is created when the toggle is switched on. */
function beep() {
  if (!state.audio || state.preferences?.sound === false) return;
  const audio = state.audio;
  const oscillator = audio.createOscillator();
  const gain = audio.createGain();
  oscillator.frequency.value = 880;
  gain.gain.setValueAtTime(0.0001, audio.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.2, audio.currentTime + 0.01);
  gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.18);
  oscillator.connect(gain).connect(audio.destination);
  oscillator.start();
  oscillator.stop(audio.currentTime + 0.2);
}

function setSound(on) {
  store.set('sound', on ? 'on' : 'off');
  if (on && !state.audio) state.audio = new AudioContext();
  if (!on && state.audio) {
    state.audio.close();
    state.audio = null;
  }
}

$('sound-toggle').addEventListener('change', (event) => {
  setSound(event.target.checked);
  if (event.target.checked) beep();
});

// ---------------------------------------------------------------------------
// Web Push on this device. The service worker (/demo/sw.js) shows a push and
// marks it clicked; the client library subscribes and hands the worker each
// new token (docs/CLIENT.md). A subscription belongs to the user who made
// it: switching users turns push off here.
// ---------------------------------------------------------------------------

function pushRegistration() {
  return navigator.serviceWorker.register('/demo/sw.js', { scope: '/demo' });
}

async function currentSubscription() {
  const registration = await navigator.serviceWorker.getRegistration('/demo');
  return (await registration?.pushManager.getSubscription()) ?? null;
}

async function turnPushOn() {
  const registration = await pushRegistration();
  await navigator.serviceWorker.ready;
  await state.herald.push.subscribe(registration);
  store.set('push-user', state.user);
}

async function turnPushOff() {
  const registration = await navigator.serviceWorker.getRegistration('/demo');
  if (registration) await state.herald.push.unsubscribe(registration);
  store.set('push-user', '');
}

/** Shows whether this device gets pushes for the current user. */
async function showPush() {
  const toggle = $('push-toggle');
  if (!state.herald.push.supported) {
    showStatus($('push-status'), 'This browser cannot take Web Push.');
    return;
  }
  let subscribed = Boolean(await currentSubscription());
  if (subscribed && store.get('push-user', '') !== state.user) {
    // Made for another user of this demo (in an earlier visit): not this
    // user's device. Its endpoint stops working, and Herald forgets it at
    // the first push (the push service answers 410).
    await (await currentSubscription()).unsubscribe();
    subscribed = false;
  }
  toggle.checked = subscribed;
  toggle.disabled = Notification.permission === 'denied';
  showStatus($('push-status'), toggle.disabled ? 'Notifications are blocked for this site in the browser.' : '');
  // Subscribed: the library hands the worker every new token from now on.
  if (subscribed) await state.herald.push.subscription(await navigator.serviceWorker.getRegistration('/demo'));
}

$('push-toggle').addEventListener('change', async (event) => {
  const toggle = event.target;
  toggle.disabled = true;
  showStatus($('push-status'), toggle.checked ? 'Turning push on…' : 'Turning push off…');
  try {
    await (toggle.checked ? turnPushOn() : turnPushOff());
    showStatus($('push-status'), toggle.checked ? 'Push is on for this device.' : 'Push is off.');
  } catch (error) {
    toggle.checked = Boolean(await currentSubscription());
    showStatus($('push-status'), `Push: ${error.message}`, 'error');
  } finally {
    toggle.disabled = false;
  }
});

// ---------------------------------------------------------------------------
// Preferences (GET / PUT /v1/preferences: PUT replaces the whole document).
// ---------------------------------------------------------------------------

function showPreferences(prefs) {
  state.preferences = prefs;
  $('pref-default-in-app').checked = prefs.default.in_app;
  $('pref-default-push').checked = prefs.default.push;
  const rows = $('categories').tBodies[0];
  rows.replaceChildren();
  for (const [name, channels] of Object.entries(prefs.categories)) addCategoryRow(name, channels);
  const quiet = prefs.quiet_hours;
  $('quiet-enabled').checked = Boolean(quiet);
  if (quiet) {
    $('quiet-start').value = quiet.start;
    $('quiet-end').value = quiet.end;
    $('quiet-timezone').value = quiet.timezone;
  }
  $('pref-sound').checked = prefs.sound;
}

function addCategoryRow(name, channels = { in_app: true, push: true }) {
  const checkbox = (checked, channel) => {
    const input = el('input', { type: 'checkbox', checked, className: channel });
    input.setAttribute('aria-label', `${name} ${channel.replace('_', '-')}`);
    return input;
  };
  const removeButton = el('button', { type: 'button', textContent: 'Remove' });
  const row = el('tr', { dataset: { category: name } },
    el('td', {}, name),
    el('td', {}, checkbox(channels.in_app, 'in_app')),
    el('td', {}, checkbox(channels.push, 'push')),
    el('td', {}, removeButton));
  removeButton.addEventListener('click', () => row.remove());
  $('categories').tBodies[0].append(row);
}

function preferencesFromForm() {
  const categories = {};
  for (const row of $('categories').tBodies[0].rows) {
    categories[row.dataset.category] = {
      in_app: row.querySelector('.in_app').checked,
      push: row.querySelector('.push').checked,
    };
  }
  return {
    default: { in_app: $('pref-default-in-app').checked, push: $('pref-default-push').checked },
    categories,
    quiet_hours: $('quiet-enabled').checked
      ? { start: $('quiet-start').value, end: $('quiet-end').value, timezone: $('quiet-timezone').value.trim() }
      : null,
    sound: $('pref-sound').checked,
  };
}

$('add-category').addEventListener('click', () => {
  const input = $('new-category');
  const name = input.value.trim();
  if (!name) return;
  // The server validates the name (a-z 0-9 _ -) and says so on save.
  const exists = [...$('categories').tBodies[0].rows].some((row) => row.dataset.category === name);
  if (!exists) addCategoryRow(name);
  input.value = '';
});

$('prefs-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    showPreferences(await state.herald.preferences.put(preferencesFromForm()));
    showStatus($('prefs-status'), 'Saved.', 'ok');
  } catch (error) {
    showStatus($('prefs-status'), `Not saved: ${error.message}`, 'error');
  }
});

// ---------------------------------------------------------------------------
// Sending a test notification (POST /v1/publish with the publisher token).
// ---------------------------------------------------------------------------

$('send-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const topic = $('send-target').value;
  const to = topic ? { topic } : { users: [$('send-to').value.trim() || state.user] };
  // Title is sent even when empty: the server's answer is the validation.
  const notification = {
    type: $('send-type').value.trim(),
    title: $('send-title').value,
    priority: $('send-priority').value,
  };
  const body = $('send-body').value;
  const url = $('send-url').value.trim();
  if (body) notification.body = body;
  if (url) notification.url = url;
  const status = $('send-status');
  try {
    const answer = await request('POST', '/v1/publish', {
      body: { to, notification },
      token: state.session.publisher_token,
    });
    if (topic) {
      showStatus(status, `Published to topic ${answer.topic} as ${answer.id}.`, 'ok');
      return;
    }
    const [result] = answer.results;
    if (result.dropped) {
      showStatus(status, `Dropped for ${result.user}: ${result.dropped} (in-app is off for this category).`, 'error');
    } else {
      const online = result.online ? 'online' : 'not online: it waits in the history';
      showStatus(status, `Stored for ${result.user} as ${result.id} (${online}).`, 'ok');
    }
  } catch (error) {
    showStatus(status, `${error.status}: ${error.message}`, 'error');
  }
});

// ---------------------------------------------------------------------------
// Topics: which public topics this stream follows.
// ---------------------------------------------------------------------------

/** The saved choice, or every offered topic the first time. */
function savedTopics(offered) {
  let saved = null;
  try {
    saved = JSON.parse(store.get('topics', 'null'));
  } catch {
    // Not ours, or from an older page: start afresh.
  }
  return new Set(Array.isArray(saved) ? saved.filter((name) => offered.includes(name)) : offered);
}

function showTopics() {
  const toggles = $('topic-toggles');
  toggles.replaceChildren();
  for (const name of state.offered) {
    const input = el('input', { type: 'checkbox', checked: state.followed.has(name), dataset: { topic: name } });
    input.addEventListener('change', () => follow(name, input.checked));
    toggles.append(el('label', { className: 'inline' }, input, `Follow ${name}`));
  }
  $('topics-empty').hidden = state.offered.length > 0;
  const target = $('send-target');
  target.replaceChildren(el('option', { value: '' }, 'a user'),
    ...state.offered.map((name) => el('option', { value: name }, `topic: ${name}`)));
  $('send-to-label').hidden = false;
}

/** Follows or unfollows a topic: a new stream with the new `?topics=` that
 *  resumes from the same cursor, so the inbox misses nothing. A topic newly
 *  followed starts at "now" on the stream; its history comes from its list,
 *  fetched once the new stream is open. */
function follow(name, on) {
  const source = topicSource(name);
  if (on) {
    state.followed.add(name);
    state.stale.add(source);
  } else {
    state.followed.delete(name);
    state.stale.delete(source);
    state.next.delete(source);
    for (const [key, item] of state.items) {
      if (sourceOf(item.notification) === source) remove(key);
    }
  }
  store.set('topics', JSON.stringify([...state.followed]));
  showStatus($('topics-status'), on ? `Following ${name}.` : `Stopped following ${name}.`, 'ok');
  state.herald.setTopics([...state.followed]);
}

$('send-target').addEventListener('change', (event) => {
  $('send-to-label').hidden = event.target.value !== '';
});

// ---------------------------------------------------------------------------
// Start-up and switching users.
// ---------------------------------------------------------------------------

async function startAs(user) {
  let session;
  try {
    session = await newSession(user);
  } catch (error) {
    showStatus($('user-status'), `Cannot switch to “${user}”: ${error.message}`, 'error');
    return;
  }
  showStatus($('user-status'), '');
  // This device's pushes were the previous user's: stop them first.
  if (state.session && state.user !== session.user) await turnPushOff().catch(() => {});
  for (const id of [...state.items.keys()]) remove(id);
  const offered = session.topics ?? [];
  const followed = savedTopics(offered);
  Object.assign(state, {
    user: session.user, session, sessionUnused: true, next: new Map(), offered, followed,
  });
  state.stale = new Set(sources());
  showTopics();
  store.set('user', session.user);
  $('user-input').value = session.user;
  $('send-to').placeholder = `this user: ${session.user}`;
  setUnread(0);
  $('list').setAttribute('aria-busy', 'true');   // until the stream is open and the list fetched
  await connect();
  showPush();
  try {
    showPreferences(await state.herald.preferences.get());
  } catch (error) {
    showStatus($('prefs-status'), `Could not load preferences: ${error.message}`, 'error');
  }
}

$('user-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const user = $('user-input').value.trim();
  if (user && user !== state.user) startAs(user);
});

$('quiet-timezone').value = Intl.DateTimeFormat().resolvedOptions().timeZone;
$('sound-toggle').checked = store.get('sound', 'off') === 'on';
// An AudioContext made without a gesture starts suspended; it resumes at the
// first click anywhere.
if ($('sound-toggle').checked) setSound(true);
document.addEventListener('click', () => state.audio?.resume(), { once: true });
// `/demo?user=<id>` opens the center as that user (a link to a given
// user's center); otherwise the user this browser used last.
startAs(new URLSearchParams(location.search).get('user') || store.get('user', 'demo'));
