// The browser client library (clients/js/herald.js, served at
// /client/herald.js) in a real headless Chromium, against real `herald`
// nodes on one real redis-server, all on loopback.
//
//   cargo build --bin herald && npm ci --prefix tests/browser && node --test tests/browser/client.test.mjs
//
// Each test page is a tiny app on a gateway's origin (Playwright serves its
// HTML) that imports the library from the gateway and records what it emits.
// Every wait is bounded; nothing sleeps for a fixed time.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, SECRET, metric, mintToken, publish, startHerald, startRedis, stopAll, stopHerald, waitFor,
} from './support.mjs';

const WAIT = 10000;

let redis;
let nodeA;
let nodeB;
let browser;

before(async () => {
  redis = await startRedis();
  const env = {
    HERALD__ENGINE__KIND: 'redis', HERALD__ENGINE__REDIS_URL: redis.url, HERALD__AUTH__SECRET: SECRET,
    // Short-lived tokens in one test: warned 2 s before they expire.
    HERALD__STREAM__TOKEN_EXPIRING_BEFORE: '2s',
  };
  [nodeA, nodeB] = await Promise.all([startHerald({ env }), startHerald({ env })]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await stopAll();
  await redis?.stop();
});

let users = 0;
function uniqueUser(prefix) {
  users += 1;
  return `${prefix}-${process.pid}-${users}`;
}

/** The app: a page that starts a Herald client for `user` and keeps a log
 *  of everything it emits in `window.log`. */
const APP = `<!doctype html><title>app</title><script type="module">
  const { Herald } = await import(new URL('/client/herald.js', window.heraldUrl).href);
  window.log = { notifications: [], unread: [], states: [], resets: [], tokens: 0 };
  window.herald = new Herald({
    url: window.heraldUrl,
    getToken: async () => { window.log.tokens += 1; return window.mintToken(); },
  });
  herald.on('notification', (n) => log.notifications.push(n.title));
  herald.on('unread', ({ count }) => log.unread.push(count));
  herald.on('state', ({ state }) => log.states.push(state));
  herald.on('reset', (reset) => log.resets.push(reset.reason));
</script>`;

/**
 * A browser context (tabs share its storage, locks and channels) for `user`
 * whose pages are the app on `appOrigin`, talking to Herald at `heraldUrl`.
 * `tokenTtl` sets the lifetime of the tokens it gets; `noLocks` removes Web
 * Locks, as in a browser without them.
 */
async function appContext(user, { heraldUrl = nodeA.url, appOrigin = heraldUrl, tokenTtl = 3600, noLocks = false } = {}) {
  const context = await browser.newContext();
  context.setDefaultTimeout(WAIT);
  context.tokenTtl = tokenTtl;
  await context.exposeFunction('mintToken', () => mintToken(user, { ttlSeconds: context.tokenTtl }));
  await context.addInitScript(({ url, noLocks }) => {
    window.heraldUrl = url;
    if (noLocks) delete Navigator.prototype.locks;
  }, { url: heraldUrl, noLocks });
  // On a gateway's origin the page comes from Playwright; another origin
  // serves it itself (staticOrigin).
  if (appOrigin === heraldUrl) {
    await context.route(`${appOrigin}/app`, (route) => route.fulfill({ contentType: 'text/html', body: APP }));
  }
  context.appUrl = `${appOrigin}/app`;
  return context;
}

async function openApp(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(error.message));
  page.on('console', (m) => process.env.DEBUG_PAGES && console.log('PAGE', m.text()));
  await page.goto(context.appUrl);
  await page.waitForFunction(() => window.herald, null, { timeout: WAIT });
  return page;
}

const log = (page) => page.evaluate(() => window.log);

async function waitForTitles(pages, titles) {
  for (const page of pages) {
    try {
      await page.waitForFunction((n) => window.log.notifications.length >= n, titles.length, { timeout: WAIT });
    } catch {
      // Fall through: the assertion below shows what arrived.
    }
    assert.deepEqual((await log(page)).notifications, titles, 'each notification exactly once, in order');
  }
}

async function leaders(pages) {
  return (await Promise.all(pages.map((page) => page.evaluate(() => window.herald.isLeader)))).filter(Boolean).length;
}

/** Waits until exactly one stream of `user`'s app is open on `node`s. */
async function waitForStreams(count, nodes = [nodeA, nodeB]) {
  let open;
  await waitFor(async () => {
    open = (await Promise.all(nodes.map((node) => metric(node, 'herald_streams_open')))).reduce((a, b) => a + b, 0);
    return open === count;
  }, WAIT, `${count} open streams (now ${open})`);
}

describe('one stream per browser', () => {
  test('three tabs share one stream; when the leader closes, another takes over and nothing is lost or repeated', async () => {
    const user = uniqueUser('tabs');
    const context = await appContext(user);
    const tabs = [];
    for (let i = 0; i < 3; i += 1) tabs.push(await openApp(context));
    await waitFor(async () => (await leaders(tabs)) === 1, WAIT, 'one leader');
    await Promise.all(tabs.map((tab) => tab.waitForFunction(() => window.herald.state === 'open')));
    await waitForStreams(1);

    await publish(nodeA, user, { type: 'a.b', title: 'one' });
    await waitForTitles(tabs, ['one']);

    const leader = tabs[(await Promise.all(tabs.map((t) => t.evaluate(() => window.herald.isLeader)))).indexOf(true)];
    const rest = tabs.filter((tab) => tab !== leader);
    await leader.close();
    // Published while the hand-over happens.
    await publish(nodeB, user, { type: 'a.b', title: 'two' });
    await waitFor(async () => (await leaders(rest)) === 1, WAIT, 'a new leader');
    await publish(nodeB, user, { type: 'a.b', title: 'three' });

    await waitForTitles(rest, ['one', 'two', 'three']);
    await waitForStreams(1);
    assert.deepEqual(rest.flatMap((tab) => tab.problems), []);
    await context.close();
  });

  test('a frozen leader hands the stream to another tab within a second', async () => {
    const user = uniqueUser('frozen');
    const context = await appContext(user);
    const tabs = [await openApp(context), await openApp(context)];
    await waitFor(async () => (await leaders(tabs)) === 1, WAIT, 'one leader');
    const leader = tabs[(await Promise.all(tabs.map((t) => t.evaluate(() => window.herald.isLeader)))).indexOf(true)];
    const other = tabs.find((tab) => tab !== leader);
    await other.waitForFunction(() => window.herald.state === 'open');

    // The page lifecycle's `freeze`, which Chrome fires on a background tab
    // it is about to freeze. (DevTools' Page.setWebLifecycleState freezes a
    // headless page without firing it, so the test fires it itself.)
    const frozenAt = Date.now();
    await leader.evaluate(() => document.dispatchEvent(new Event('freeze')));

    await other.waitForFunction(() => window.herald.isLeader && window.herald.state === 'open', null, { timeout: WAIT });
    const takeover = Date.now() - frozenAt;
    assert.ok(takeover < 1000, `took over in ${takeover} ms`);
    await publish(nodeA, user, { type: 'a.b', title: 'while frozen' });
    await waitForTitles([other], ['while frozen']);
    await waitForStreams(1);
    // Back from the freeze, the old leader queues again behind the new one.
    await leader.evaluate(() => document.dispatchEvent(new Event('resume')));
    await publish(nodeA, user, { type: 'a.b', title: 'after resume' });
    // (A synthetic freeze leaves the tab running, so it got the relay too.)
    await waitForTitles([other, leader], ['while frozen', 'after resume']);
    assert.equal(await leaders(tabs), 1);
    await context.close();
  });

  test('topics set in any tab stay set when another tab takes over', async () => {
    const user = uniqueUser('topics');
    const context = await appContext(user);
    // The first tab leads; the second is next in the lock's queue.
    const leader = await openApp(context);
    await leader.waitForFunction(() => window.herald.isLeader && window.herald.state === 'open');
    const next = await openApp(context);
    await next.waitForFunction(() => window.herald.state === 'open');
    const third = await openApp(context);
    await third.waitForFunction(() => window.herald.state === 'open');
    const streams = [];
    context.on('request', (request) => request.url().includes('/v1/events?') && streams.push(new URL(request.url())));

    // The third tab follows a topic; then the leader goes.
    await third.evaluate(() => window.herald.setTopics(['announcements']));
    await waitFor(() => streams.length === 1, WAIT, 'the leader to reopen with the topic');
    await leader.close();

    await next.waitForFunction(() => window.herald.isLeader && window.herald.state === 'open');
    assert.deepEqual(streams.map((url) => url.searchParams.get('topics')), ['announcements', 'announcements']);
    await context.close();
  });

  test('without Web Locks every tab holds its own stream and still shows each notification once', async () => {
    const user = uniqueUser('nolocks');
    const context = await appContext(user, { noLocks: true });
    const tabs = [];
    for (let i = 0; i < 3; i += 1) tabs.push(await openApp(context));
    await Promise.all(tabs.map((tab) => tab.waitForFunction(() => window.herald.state === 'open')));
    assert.equal(await leaders(tabs), 3, 'each tab leads itself');
    await waitForStreams(3);

    await publish(nodeA, user, { type: 'a.b', title: 'one' });
    await publish(nodeA, user, { type: 'a.b', title: 'two' });

    await waitForTitles(tabs, ['one', 'two']);
    await context.close();
    await waitForStreams(0);
  });
});

describe('resume', () => {
  test('a reload resumes from the stored cursor: what came meanwhile shows once', async () => {
    const user = uniqueUser('reload');
    const context = await appContext(user);
    let page = await openApp(context);
    await page.waitForFunction(() => window.herald.state === 'open');
    await publish(nodeA, user, { type: 'a.b', title: 'before' });
    await waitForTitles([page], ['before']);
    await page.close();
    await waitForStreams(0);

    await publish(nodeB, user, { type: 'a.b', title: 'while closed' });
    page = await openApp(context);

    await waitForTitles([page], ['while closed']);
    await page.waitForFunction(() => window.log.unread.at(-1) === 2);
    await context.close();
  });

  test('an expiring token is replaced and the stream resumes with nothing lost or repeated', async () => {
    const user = uniqueUser('expiry');
    // Tokens of 8 s; the stream warns 2 s before they expire.
    const context = await appContext(user, { tokenTtl: 8 });
    const page = await openApp(context);
    await page.waitForFunction(() => window.herald.state === 'open');
    const firstTokenExpires = Date.now() + 8000;
    await publish(nodeA, user, { type: 'a.b', title: 'first' });
    await waitForTitles([page], ['first']);

    // Past the first token's expiry, when its stream would have ended.
    await waitFor(() => Date.now() > firstTokenExpires + 500, 12000, 'the first token to expire');
    await publish(nodeA, user, { type: 'a.b', title: 'after renewal' });

    await waitForTitles([page], ['first', 'after renewal']);
    const { tokens, states } = await log(page);
    assert.ok(tokens >= 2, `getToken was asked again (${tokens} times)`);
    assert.equal(await page.evaluate(() => window.herald.state), 'open', JSON.stringify(states));
    await context.close();
  });

  test('offline, it says so; back online, it resumes and misses nothing', async () => {
    const user = uniqueUser('offline');
    const context = await appContext(user);
    const page = await openApp(context);
    await page.waitForFunction(() => window.herald.state === 'open');
    await page.evaluate(() => window.herald.on('state', ({ state, reason }) => { window.lastReason = `${state}:${reason}`; }));

    await context.setOffline(true);
    await page.waitForFunction(() => window.lastReason === 'offline:browser_offline');
    await publish(nodeA, user, { type: 'a.b', title: 'while offline' });
    await context.setOffline(false);

    await waitForTitles([page], ['while offline']);
    await page.waitForFunction(() => window.herald.state === 'open');
    await context.close();
  });

  test('when its node dies, the client reconnects to another and misses nothing', async () => {
    const user = uniqueUser('failover');
    const env = { HERALD__ENGINE__KIND: 'redis', HERALD__ENGINE__REDIS_URL: redis.url, HERALD__AUTH__SECRET: SECRET };
    const doomed = await startHerald({ env });
    const proxy = await switchableProxy(doomed.url);
    const context = await appContext(user, { heraldUrl: proxy.url });
    const page = await openApp(context);
    await page.waitForFunction(() => window.herald.state === 'open');
    await publish(doomed, user, { type: 'a.b', title: 'one' });
    await waitForTitles([page], ['one']);

    doomed.child.kill('SIGKILL');
    await page.waitForFunction(() => window.herald.state === 'reconnecting');
    await publish(nodeB, user, { type: 'a.b', title: 'two' });
    proxy.switchTo(nodeB.url);

    await waitForTitles([page], ['one', 'two']);
    await page.waitForFunction(() => window.herald.state === 'open');
    await context.close();
    await proxy.close();
    await stopHerald(doomed);
  });
});

describe('across browsers and origins', () => {
  test('marking read in one browser updates the other\'s unread count, through its stream', async () => {
    const user = uniqueUser('sync');
    const first = await appContext(user, { heraldUrl: nodeA.url });
    const second = await appContext(user, { heraldUrl: nodeB.url });
    const [pageA, pageB] = [await openApp(first), await openApp(second)];
    await Promise.all([pageA, pageB].map((page) => page.waitForFunction(() => window.herald.state === 'open')));
    const id = await publish(nodeA, user, { type: 'a.b', title: 'read me' });
    await pageB.waitForFunction(() => window.herald.unreadCount === 1);

    await pageA.evaluate((id) => window.herald.markRead([id]), id);

    await pageB.waitForFunction(() => window.herald.unreadCount === 0);
    await first.close();
    await second.close();
  });

  test('an app on another origin listed in server.cors.allowed_origins uses Herald; others cannot', async () => {
    const app = await staticOrigin();
    const env = {
      HERALD__ENGINE__KIND: 'redis', HERALD__ENGINE__REDIS_URL: redis.url, HERALD__AUTH__SECRET: SECRET,
      HERALD__SERVER__CORS__ALLOWED_ORIGINS: app.url,
    };
    const herald = await startHerald({ env });
    const user = uniqueUser('cors');
    const context = await appContext(user, { heraldUrl: herald.url, appOrigin: app.url });
    const page = await openApp(context);
    await page.waitForFunction(() => window.herald.state === 'open');
    await publish(herald, user, { type: 'a.b', title: 'cross-origin' });
    await waitForTitles([page], ['cross-origin']);
    const listed = await page.evaluate(async () => (await window.herald.list()).items.map((n) => n.title));
    assert.deepEqual(listed, ['cross-origin']);

    // The same app on an origin Herald does not list: its calls are refused.
    const other = await staticOrigin();
    const stranger = await appContext(user, { heraldUrl: herald.url, appOrigin: other.url });
    const refused = await openApp(stranger);
    const error = await refused.evaluate(() => window.herald.list().then(() => null, (e) => e.code));
    assert.equal(error, 'network', 'the browser withholds the answer');
    await context.close();
    await stranger.close();
    await Promise.all([app.close(), other.close()]);
    await stopHerald(herald);
  });
});

/** An origin of its own on loopback that serves the app. */
async function staticOrigin() {
  const server = createServer((request, response) => {
    response.setHeader('Content-Type', 'text/html');
    response.end(APP);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** A TCP proxy on loopback whose upstream can be switched: the tab's "Herald"
 *  stays one URL while the node behind it changes, as behind a load balancer. */
async function switchableProxy(upstreamUrl) {
  const net = await import('node:net');
  let upstream = new URL(upstreamUrl);
  const sockets = new Set();
  const server = net.createServer((client) => {
    const target = net.connect(Number(upstream.port), upstream.hostname);
    for (const socket of [client, target]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => { client.destroy(); target.destroy(); });
    }
    client.pipe(target).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    switchTo: (url) => { upstream = new URL(url); },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
