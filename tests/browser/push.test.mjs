// Web Push in a real headless Chromium: the demo's service worker
// (GET /demo/sw.js) registered by a page, subscribed through the browser's
// own PushManager, stored by the real `herald serve --demo` (memory engine,
// a VAPID key made for the run), shown and clicked.
//
//   cargo build --bin herald && npm ci --prefix tests/browser && node --test tests/browser/push.test.mjs
//
// What a machine without a network cannot do, and what stands in for it:
//
// * Subscribing. `pushManager.subscribe` asks the browser's push service for
//   an endpoint; Chromium's is Google's (GCM: a check-in, then a
//   registration), unreachable here, and the call never settles. Chromium
//   takes the two URLs from `--gcm-checkin-url` and `--gcm-registration-url`,
//   so the tests point them at `fakeGcm()` below, which answers like
//   Google's: the page's subscribe, the browser's keys and the gateway's
//   handling of the subscription are real; only the endpoint (on Google's
//   host) leads nowhere.
// * Receiving. A push sent to that endpoint cannot arrive, so the tests hand
//   the worker the push as the browser would after decrypting it, through
//   the DevTools protocol (`ServiceWorker.deliverPushMessage`), the payload
//   being a notification published for real and read back from the API.
//   (That Herald encrypts and sends exactly this payload is tested against a
//   fake push service in tests/it/push.rs.)
// * Clicking. Nothing can click a system notification in headless Chromium,
//   and a synthetic `notificationclick` event's `waitUntil` is refused, so
//   the tests call the worker's own click handler, `handleClick`, with the
//   shown notification.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, demoSession, startHerald, stopAll, waitFor } from './support.mjs';

/** Longest wait for anything the page or the worker should do. */
const WAIT = 5000;

// ---------------------------------------------------------------------------
// A stand-in for Google's push registration (GCM), which Chromium's
// pushManager.subscribe needs. It answers the two calls subscribing makes:
//
//   POST /checkin   (protobuf AndroidCheckinResponse expected) → stats_ok,
//                   android_id and security_token: the device credentials
//                   every later call carries;
//   POST /register  (form: app, sender = the VAPID key, ...) → `token=<id>`,
//                   which Chromium turns into the subscription's endpoint.
// Unsubscribing sends /register with `delete=true`; the answer is `deleted=`.
// ---------------------------------------------------------------------------

async function fakeGcm() {
  const registrations = [];
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      if (request.url === '/checkin') {
        // Field 1 (stats_ok, varint) = true; fields 7 and 8 (android_id,
        // security_token, fixed64): any non-zero numbers.
        const fixed64 = (tag, value) => {
          const bytes = Buffer.alloc(9);
          bytes[0] = tag;
          bytes.writeBigUInt64LE(value, 1);
          return bytes;
        };
        response.setHeader('Content-Type', 'application/x-protobuf');
        response.end(Buffer.concat([Buffer.from([0x08, 0x01]), fixed64(0x39, 4242424242n), fixed64(0x41, 2424242424n)]));
      } else if (request.url === '/register') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        registrations.push(Object.fromEntries(form));
        response.setHeader('Content-Type', 'text/plain');
        response.end(form.get('delete') ? `deleted=${form.get('app')}` : `token=fake-gcm-${registrations.length}-${process.pid}`);
      } else {
        response.statusCode = 404;
        response.end();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, registrations, close: () => new Promise((resolve) => server.close(resolve)) };
}

// ---------------------------------------------------------------------------
// The gateway, the stand-in, and browsers. Push needs a profile on disk
// (Chromium refuses push in an off-the-record one, which is what a plain
// `browser.newContext()` is), so each test gets a persistent context in a
// fresh user-data dir of its own.
// ---------------------------------------------------------------------------

let herald;
let gcm;
const profiles = [];

before(async () => {
  gcm = await fakeGcm();
  herald = await startHerald({
    args: ['--demo'],
    // The endpoints Chromium makes from the stand-in's registrations are on
    // Google's hosts; the allowlist must take them, as it takes FCM's.
    env: { HERALD__PUSH__ENDPOINT_HOSTS: 'fcm.googleapis.com,*.google.com' },
  });
});

after(async () => {
  await stopAll();
  await gcm?.close();
  for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
});

/** A browser with notifications allowed for the gateway's origin, whose push
 *  service is the stand-in. Close it with `context.close()`. */
async function pushCapableBrowser() {
  const dir = mkdtempSync(join(tmpdir(), 'herald-push-test-'));
  profiles.push(dir);
  const args = [...CHROMIUM_ARGS, `--gcm-checkin-url=${gcm.url}/checkin`, `--gcm-registration-url=${gcm.url}/register`];
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args });
  context.setDefaultTimeout(WAIT);
  await context.grantPermissions(['notifications'], { origin: herald.url });
  return context;
}

let users = 0;
function uniqueUser(prefix) {
  users += 1;
  return `${prefix}-${process.pid}-${users}`;
}

/** A blank page on the gateway's origin (a service worker registers from its
 *  own origin only), collecting script errors. */
async function blankPage(context) {
  const path = '/demo/push-harness';
  await context.route(`${herald.url}${path}`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>push harness</title>' }));
  const page = context.pages()[0] ?? await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  await page.goto(`${herald.url}${path}`);
  return page;
}

/**
 * What a page does to turn push on, in the browser: registers the demo's
 * worker for `/demo`, subscribes with the gateway's VAPID key, hands the
 * worker the token, and stores the subscription in the gateway. Resolves to
 * the browser's subscription as JSON.
 */
function subscribeInPage(page, token) {
  return page.evaluate(async (token) => {
    const registration = await navigator.serviceWorker.register('/demo/sw.js', { scope: '/demo' });
    await navigator.serviceWorker.ready;
    const { public_key: key } = await (await fetch('/v1/push/vapid_public_key')).json();
    const raw = atob(key.replace(/-/g, '+').replace(/_/g, '/'));
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: Uint8Array.from(raw, (c) => c.charCodeAt(0)),
    });
    const reply = new MessageChannel();
    const stored = new Promise((resolve) => { reply.port1.onmessage = (event) => resolve(event.data); });
    (registration.active ?? registration.waiting ?? registration.installing)
      .postMessage({ type: 'herald:token', token, url: location.origin }, [reply.port2]);
    const ack = await stored;
    if (!ack.ok) throw new Error(`the worker did not keep the token: ${ack.error}`);
    const response = await fetch('/v1/push/subscriptions', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(subscription),
    });
    if (!response.ok) throw new Error(`POST /v1/push/subscriptions: ${response.status} ${await response.text()}`);
    return subscription.toJSON();
  }, token);
}

const session = (user) => demoSession(herald, user);

async function api(method, path, token, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${herald.url}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

/** Publishes to `user` for real; resolves to the publish result and the
 *  notification as the API (and so a push) renders it. */
async function published(tokens, notification) {
  const answer = await api('POST', '/v1/publish', tokens.publisher_token, { to: { users: [tokens.user] }, notification });
  const [result] = answer.results;
  const { items } = await api('GET', '/v1/notifications?limit=100', tokens.token);
  return { result, notification: items.find((item) => item.id === result.id) };
}

/**
 * Delivers `data` (a string) to the demo worker as a decrypted push, the way
 * the browser does when one arrives, and resolves once the worker's
 * `showNotification` for it has settled.
 *
 * Why it waits on the worker rather than polling `getNotifications()`:
 * Chromium drops from its notification database any notification that the
 * display does not list yet when `getNotifications()` runs, so a read racing
 * a show loses that notification for good (it stays on screen, but is no
 * longer listed). The worker's `showNotification` is wrapped to count the
 * shows that settled; the test reads the list only when none is in flight.
 */
async function deliverPush(page, data) {
  const worker = await demoWorker(page.context());
  const before = await worker.evaluate(() => {
    if (self.showsSettled === undefined) {
      self.showsSettled = 0;
      const show = self.registration.showNotification.bind(self.registration);
      self.registration.showNotification = (...args) => show(...args).finally(() => { self.showsSettled += 1; });
    }
    return self.showsSettled;
  });
  const cdp = await page.context().newCDPSession(page);
  const registrations = [];
  cdp.on('ServiceWorker.workerRegistrationUpdated', (event) => registrations.push(...event.registrations));
  await cdp.send('ServiceWorker.enable');
  const scope = `${herald.url}/demo`;
  const live = (r) => r.scopeURL === scope && !r.isDeleted;
  await waitFor(() => registrations.some(live), WAIT, `a registration for ${scope}`);
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: herald.url, registrationId: registrations.find(live).registrationId, data });
  await waitFor(() => worker.evaluate((count) => self.showsSettled > count, before), WAIT, 'the worker to show the push');
}

/** What the worker shows, as plain objects (read only when no show is in
 *  flight: see deliverPush). */
function shown(page) {
  return page.evaluate(async () => {
    const registration = await navigator.serviceWorker.getRegistration('/demo');
    return (await registration.getNotifications()).map((n) => ({
      title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction, data: n.data,
    }));
  });
}

/** Runs the worker's click handler on the shown notification tagged `tag`,
 *  as the browser does for a real click; resolves to what it reports. */
async function clickShown(context, tag) {
  const worker = await demoWorker(context);
  return worker.evaluate(async (tag) => {
    const [shownOne] = await self.registration.getNotifications({ tag });
    return handleClick(shownOne);
  }, tag);
}

/** The demo's service worker, once running. */
async function demoWorker(context) {
  const isDemo = (worker) => worker.url() === `${herald.url}/demo/sw.js`;
  return context.serviceWorkers().find(isDemo) ?? context.waitForEvent('serviceworker', { predicate: isDemo });
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

describe('the demo service worker', () => {
  test('registers for /demo, and the browser subscription it serves is stored by the gateway', async () => {
    const tokens = await session(uniqueUser('subscribe'));
    const context = await pushCapableBrowser();
    const page = await blankPage(context);

    const subscription = await subscribeInPage(page, tokens.token);

    assert.match(subscription.endpoint, /^https:\/\/[^/]+\.google(apis)?\.com\/.+fake-gcm-/);
    assert.equal(Buffer.from(subscription.keys.p256dh, 'base64url').length, 65);
    const { subscriptions } = await api('GET', '/v1/push/subscriptions', tokens.token);
    assert.deepEqual(subscriptions.map((s) => s.endpoint), [subscription.endpoint]);
    // Chromium registered with the gateway's VAPID key as the sender.
    const { public_key: key } = await api('GET', '/v1/push/vapid_public_key', tokens.token);
    assert.ok(gcm.registrations.some((r) => r.sender === key), JSON.stringify(gcm.registrations));
    // And a publish to this user is now queued for push when offline.
    const { result } = await published(tokens, { type: 'build.failed', title: 'Build 7 failed' });
    assert.equal(result.push, 'queued', JSON.stringify(result));
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  test('shows a push once per tag, however often it arrives', async () => {
    const tokens = await session(uniqueUser('shown'));
    const context = await pushCapableBrowser();
    const page = await blankPage(context);
    await subscribeInPage(page, tokens.token);
    const { notification: first } = await published(tokens, {
      type: 'comment.mention', title: 'Mina mentioned you', body: 'in “Q4 plan”', url: '/docs/42#c7',
    });

    await deliverPush(page, JSON.stringify(first));
    let notifications = await shown(page);
    assert.deepEqual(notifications, [{
      title: 'Mina mentioned you',
      body: 'in “Q4 plan”',
      tag: first.id,
      requireInteraction: false,
      data: { id: first.id, url: '/docs/42#c7', topic: null, type: 'comment.mention' },
    }]);

    // The same push again (delivery is at least once) replaces the first.
    const { notification: second } = await published(tokens, { type: 'build.failed', title: 'Build 7 failed', priority: 'high' });
    await deliverPush(page, JSON.stringify(first));
    await deliverPush(page, JSON.stringify(second));
    notifications = await shown(page);
    assert.deepEqual(notifications.map((n) => n.tag).sort(), [first.id, second.id].sort());
    assert.equal(notifications.find((n) => n.tag === second.id).requireInteraction, true, 'high priority stays');

    // One collapse key: the newer replaces the older.
    const { notification: older } = await published(tokens, { type: 'build.status', title: 'Build 8: running', collapse_key: 'build-8' });
    const { notification: newer } = await published(tokens, { type: 'build.status', title: 'Build 8: passed', collapse_key: 'build-8' });
    await deliverPush(page, JSON.stringify(older));
    await deliverPush(page, JSON.stringify(newer));
    notifications = await shown(page);
    assert.deepEqual(notifications.filter((n) => n.tag === 'build-8').map((n) => n.title), ['Build 8: passed']);
    assert.equal(notifications.length, 3);
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  test('an unreadable push still shows something', async () => {
    const tokens = await session(uniqueUser('garbled'));
    const context = await pushCapableBrowser();
    const page = await blankPage(context);
    await subscribeInPage(page, tokens.token);

    await deliverPush(page, 'not JSON');

    const notifications = await shown(page);
    assert.deepEqual(notifications.map((n) => n.title), ['New notification']);
    await context.close();
  });

  test('a click marks the notification clicked, closes it and turns to the app\'s tab', async () => {
    const tokens = await session(uniqueUser('click'));
    const context = await pushCapableBrowser();
    const page = await blankPage(context);
    await subscribeInPage(page, tokens.token);
    const { notification } = await published(tokens, { type: 'comment.mention', title: 'Click me', url: '/demo' });
    await deliverPush(page, JSON.stringify(notification));
    assert.equal((await shown(page)).length, 1);

    const result = await clickShown(context, notification.id);

    assert.equal(result.id, notification.id);
    assert.equal(result.marked, true, JSON.stringify(result));
    const { items } = await api('GET', '/v1/notifications', tokens.token);
    assert.deepEqual(items.filter((n) => n.id === notification.id).map((n) => [n.clicked, n.read]), [[true, true]]);
    assert.deepEqual(await shown(page), [], 'the notification is closed');
    // It found the app's open tab (under /demo) and tried to focus it; the
    // browser allows that only while a real click is handled.
    assert.deepEqual([result.window, result.error], ['none', 'InvalidAccessError: Not allowed to focus a window.']);
    await context.close();
  });

  test('the demo page turns push on and off for its user, and its worker marks a click', async () => {
    const user = uniqueUser('demo');
    const tokens = await session(user);
    const context = await pushCapableBrowser();
    await context.addInitScript((name) => localStorage.setItem('herald-demo:user', name), user);
    const page = context.pages()[0] ?? await context.newPage();
    const problems = [];
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(`${herald.url}/demo`);
    await page.locator('#connection[data-state="open"]').waitFor();
    await page.locator('#bell').click();

    await page.locator('#push-toggle:not([disabled])').check();

    await page.locator('#push-status', { hasText: 'Push is on for this device.' }).waitFor();
    const { subscriptions } = await api('GET', '/v1/push/subscriptions', tokens.token);
    const endpoint = await page.evaluate(async () =>
      (await (await navigator.serviceWorker.getRegistration('/demo')).pushManager.getSubscription()).endpoint);
    assert.deepEqual(subscriptions.map((s) => s.endpoint), [endpoint]);

    // The worker got the page's token: a click on a push marks it clicked,
    // and the page hears of it on its stream.
    const { notification } = await published(tokens, { type: 'comment.mention', title: 'From the demo' });
    await deliverPush(page, JSON.stringify(notification));
    const result = await clickShown(context, notification.id);
    assert.equal(result.marked, true, JSON.stringify(result));
    await page.locator(`#list li[data-id="${notification.id}"][data-read="true"]`).waitFor();

    await page.locator('#push-toggle').uncheck();
    await page.locator('#push-status', { hasText: 'Push is off.' }).waitFor();
    assert.deepEqual((await api('GET', '/v1/push/subscriptions', tokens.token)).subscriptions, []);
    assert.equal(await page.evaluate(async () =>
      (await (await navigator.serviceWorker.getRegistration('/demo')).pushManager.getSubscription())), null);
    assert.deepEqual(problems, []);
    await context.close();
  });
});
