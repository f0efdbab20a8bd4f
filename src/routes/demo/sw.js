// Herald's service worker: shows a Web Push as a system notification, and
// handles its click. Served by the demo at GET /demo/sw.js (demo mode only)
// and registered by the demo page with `{scope: '/demo'}`; docs/PUSH.md walks
// through it. An app copies this file, serves it from its own origin (a
// service worker must come from the page's origin), and changes the places
// marked APP. The client library (`herald.push.subscribe`) hands it the
// user's token and Herald's URL.
//
// What it relies on from Herald (docs/API.md, "Web Push"):
//   * the push's data is one notification as the stream's `notification`
//     event carries it: {id, created_at, read, clicked, type, title, body?,
//     url?, icon?, priority, data?, collapse_key?, topic?}; `body` may have
//     been cut and `data` dropped to fit a push's 4 KiB;
//   * a push may arrive twice (delivery is at least once): the notification
//     is shown with `tag: collapse_key ?? id`, so the second showing
//     replaces the first instead of adding a second one;
//   * POST /v1/notifications/{id}/clicked marks it clicked (and read);
//   * GET /v1/push/vapid_public_key and POST / DELETE /v1/push/subscriptions
//     move the subscription when the browser replaces it.
//
// Nothing here runs unless the page registered it; it has no `fetch`
// handler, so it never stands between the page and the network.

'use strict';

/** Where the page's messages and the token are kept. */
const DB_NAME = 'herald-sw';
const DB_STORE = 'settings';

/** What a click opens when no tab of the app is open and the notification
 *  has no `url`. APP: your app's start page. */
const FALLBACK_URL = new URL('/demo', self.location.origin).href;

/** A notification whose push carried nothing readable (an empty or non-JSON
 *  payload): browsers require every push to show something. */
const GENERIC = { title: 'New notification', body: 'Open the app to see it.' };

// ---------------------------------------------------------------------------
// The user's token and Herald's URL, handed over by the page.
//
// The worker has no session of its own and cannot read the page's memory or
// localStorage. The page posts its current token (and again whenever it gets
// a new one) with `{type: 'herald:token', token, url}`, `url` being Herald's
// origin when it is not this one; both are kept in IndexedDB
// because the browser stops an idle worker at any time and this file's
// globals go with it. The worker answers on the message's port once the token
// is stored, so the page can wait for it.
//
// APP, the alternative: with cookie auth, drop all of this. A worker's fetch
// to its own origin sends that origin's cookies (`credentials:
// 'same-origin'`, the default), so `markClicked` needs no header and keeps
// working however long the user stays away, which a short-lived token does
// not (a click after the token expired is answered 401: the tab the click
// opens is told so, and marks it clicked with its own, fresh token).
// ---------------------------------------------------------------------------

function openDatabase() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(DB_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function setting(key, value) {
  const db = await openDatabase();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(DB_STORE, value === undefined ? 'readonly' : 'readwrite');
      const store = transaction.objectStore(DB_STORE);
      let result;
      if (value === undefined) {
        const read = store.get(key);
        read.onsuccess = () => { result = read.result; };
      } else if (value === null) {
        store.delete(key);
      } else {
        store.put(value, key);
      }
      // Resolved on completion, not on the request's success: a write is
      // only durable once its transaction has committed.
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

const storedToken = () => setting('token');

/** Herald's origin: the one the page handed over, else this worker's own. */
async function heraldUrl() {
  return (await setting('url')) ?? self.location.origin;
}

self.addEventListener('message', (event) => {
  const message = event.data;
  if (message?.type !== 'herald:token') return;
  // `null` forgets the token (the page's user signed out).
  const saved = Promise.all([
    setting('token', typeof message.token === 'string' ? message.token : null),
    setting('url', typeof message.url === 'string' && message.url ? message.url : null),
  ]);
  event.waitUntil(saved.then(
    () => event.ports[0]?.postMessage({ ok: true }),
    (error) => event.ports[0]?.postMessage({ ok: false, error: String(error) }),
  ));
});

/** A call to Herald's user API with the stored token; the Response. */
async function api(method, path, body) {
  const token = await storedToken();
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const url = new URL(path, await heraldUrl());
  return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

// A new version of this file takes over at once rather than after every tab
// of the app has closed: it has no caches, so no old page can depend on it.
self.addEventListener('install', () => self.skipWaiting());

// ---------------------------------------------------------------------------
// A push: show it.
// ---------------------------------------------------------------------------

/** The notification a push carries, or null for an empty or unreadable one. */
function notificationFrom(data) {
  if (!data) return null;
  try {
    const notification = data.json();
    return notification && typeof notification.title === 'string' ? notification : null;
  } catch {
    return null;    // not JSON
  }
}

/** Shows one pushed notification (null: the generic one). */
async function showPushed(notification) {
  if (!notification) {
    return self.registration.showNotification(GENERIC.title, { body: GENERIC.body, data: { url: null } });
  }
  const { id, url, icon, topic } = notification;
  return self.registration.showNotification(notification.title, {
    body: notification.body ?? '',
    icon,
    badge: icon,
    // One notification per tag: a duplicate push (or a newer one with the
    // same collapse key) replaces what is shown, silently (no `renotify`).
    tag: notification.collapse_key ?? id,
    // High priority stays on screen until the user acts on it.
    requireInteraction: notification.priority === 'high',
    timestamp: Date.parse(notification.created_at) || undefined,
    // What the click needs. A topic's notification is a broadcast with no
    // read state: it is not marked clicked.
    data: { id, url: url ?? null, topic: topic ?? null, type: notification.type },
  });
}

self.addEventListener('push', (event) => {
  // Everything inside waitUntil: the browser may stop the worker as soon as
  // the handler returns, and Chrome shows its own "updated in the
  // background" notice for a push that showed nothing.
  event.waitUntil(showPushed(notificationFrom(event.data)));
});

// ---------------------------------------------------------------------------
// A click: mark it clicked, and bring the app to the front.
// ---------------------------------------------------------------------------

/** POST /v1/notifications/{id}/clicked; whether Herald took it. */
async function markClicked(id) {
  try {
    const response = await api('POST', `/v1/notifications/${encodeURIComponent(id)}/clicked`);
    return response.ok;
  } catch {
    return false;    // offline: the tab it opens is told, and tries itself
  }
}

/** The URL a click goes to: the notification's `url` resolved against this
 *  origin (`/docs/42` is the app's page), else the app's start page. */
function targetOf(data) {
  if (data?.url) {
    try {
      return new URL(data.url, self.location.origin).href;
    } catch {
      // not a URL: fall back
    }
  }
  return FALLBACK_URL;
}

/** Whether a tab's URL is one of the app's pages: under this worker's scope
 *  (query and fragment aside; scope `/demo` covers `/demo` and `/demo/...`). */
function inScope(url) {
  const page = new URL(url);
  page.search = '';
  page.hash = '';
  const scope = self.registration.scope;
  return page.href === scope || page.href.startsWith(scope.endsWith('/') ? scope : `${scope}/`);
}

/** An open tab of the app, preferring one already at `target`, or null.
 *  `includeUncontrolled`: this worker controls no tab (it has no fetch
 *  handler and does not claim them). */
async function appTab(target) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  return windows.find((client) => client.url === target) ?? windows.find((client) => inScope(client.url)) ?? null;
}

/**
 * Handles a click on a shown notification: closes it, marks it clicked, and
 * focuses a tab of the app or opens the notification's page. Resolves to what
 * happened: {id, marked, window: 'focused' | 'opened' | 'none', error?}.
 *
 * The browser lets a worker focus or open a window only while it handles a
 * real click, so focusing starts at once, alongside the API call, not after
 * it. The tab is then told `{type: 'herald:notificationclick', id, url,
 * marked}`: when the mark failed (an expired token, offline), the page marks
 * it with its own token.
 *
 * A function of its own (a global of the worker) so a test can run it: a
 * test cannot click a system notification, and a synthetic event's
 * `waitUntil` is refused.
 */
async function handleClick(notification) {
  notification.close();
  const data = notification.data ?? {};
  const id = data.id ?? null;
  const target = targetOf(data);
  const marking = id && !data.topic ? markClicked(id) : Promise.resolve(false);
  let client = null;
  let opened = 'none';
  let windowError;
  try {
    const tab = await appTab(target);
    if (tab) {
      client = await tab.focus();
      opened = 'focused';
    } else {
      client = await self.clients.openWindow(target);
      opened = client ? 'opened' : 'none';    // null: opened, but not this origin's
    }
  } catch (error) {
    windowError = `${error.name}: ${error.message}`;
  }
  const marked = await marking;
  client?.postMessage({ type: 'herald:notificationclick', id, url: data.url ?? null, topic: data.topic ?? null, marked });
  return { id, marked, window: opened, ...(windowError && { error: windowError }) };
}

self.addEventListener('notificationclick', (event) => {
  event.waitUntil(handleClick(event.notification));
});

// ---------------------------------------------------------------------------
// The browser replaced the subscription (it expired, or the push service
// rotated it): subscribe again with the same key and tell Herald, or pushes
// would go to an endpoint that no longer exists. (Firefox fires this event;
// Chrome, today, does not: the page re-sends its subscription each time it
// starts, which covers that.)
// ---------------------------------------------------------------------------

/** The server's VAPID key, as `applicationServerKey` takes it. */
async function serverKey() {
  const response = await fetch(new URL('/v1/push/vapid_public_key', await heraldUrl()));
  if (!response.ok) throw new Error(`GET /v1/push/vapid_public_key: ${response.status}`);
  const { public_key: key } = await response.json();
  const base64 = key.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
}

async function resubscribe(oldSubscription, newSubscription) {
  const subscription = newSubscription ?? await self.registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: oldSubscription?.options?.applicationServerKey ?? await serverKey(),
  });
  const added = await api('POST', '/v1/push/subscriptions', subscription.toJSON());
  if (!added.ok) throw new Error(`POST /v1/push/subscriptions: ${added.status}`);
  if (oldSubscription && oldSubscription.endpoint !== subscription.endpoint) {
    await api('DELETE', '/v1/push/subscriptions', { endpoint: oldSubscription.endpoint });
  }
  return subscription;
}

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(resubscribe(event.oldSubscription, event.newSubscription));
});
