// The demo notification center (GET /demo) in a real headless Chromium,
// against the real `herald serve --demo` (memory engine) on loopback.
//
//   cargo build --bin herald && npm ci --prefix tests/browser && node --test tests/browser/
//
// Needs Debian's `chromium` (/usr/bin/chromium; CHROMIUM overrides it) and
// the debug binary (HERALD_BIN overrides it). Every wait is bounded; nothing
// sleeps for a fixed time.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, demoSession, startHerald, stopAll, timeout } from './support.mjs';

/** Longest wait for anything the page should show. */
const WAIT = 5000;
/** Where the screenshots go (kept by CI as artifacts when it wants them). */
const SCREENSHOTS = fileURLToPath(new URL('../../target/browser-screenshots', import.meta.url));

// ---------------------------------------------------------------------------
// The browser, and pages that report their errors.
// ---------------------------------------------------------------------------

let browser;
let herald;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  herald = await startHerald();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  });
});

after(async () => {
  await browser?.close();
  await stopAll();
});

let users = 0;
/** A user name of its own for each test (the gateway is shared). */
function uniqueUser(prefix) {
  users += 1;
  return `${prefix}-${process.pid}-${users}`;
}

/** A browser context (tabs share its localStorage) whose pages start as `user`. */
async function contextFor(user) {
  const context = await browser.newContext();
  context.setDefaultTimeout(WAIT);
  await context.addInitScript((name) => localStorage.setItem('herald-demo:user', name), user);
  return context;
}

/** Opens the demo in a new tab and waits until its stream is live and its
 *  list loaded. `problems` collects script errors, CSP violations and
 *  console errors other than the HTTP errors a test provokes. */
async function openTab(context, gateway = herald) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    page.problems.push(`console: ${text}`);
  });
  await page.goto(`${gateway.url}/demo`);
  await live(page);
  await openPanel(page);
  return page;
}

/** Opens the notification panel with the bell (it stays open across
 *  reloads of the tab). */
async function openPanel(page) {
  if (await page.locator('#center').isHidden()) await page.locator('#bell').click();
  await page.locator('#center').waitFor();
}

async function live(page) {
  await page.locator('#connection[data-state="open"]').waitFor();
  // The list is fetched once the stream is open.
  await page.locator('#list[aria-busy="false"]').waitFor({ state: 'attached' });
}

async function waitUntil(page, what, condition, arg) {
  try {
    await page.waitForFunction(condition, arg, { timeout: WAIT });
  } catch (error) {
    throw new Error(`timed out after ${WAIT} ms waiting for ${what}: ${error.message.split('\n')[0]}`);
  }
}

function badge(page) {
  return page.locator('#badge').getAttribute('data-count');
}

async function waitForBadge(page, count) {
  await waitUntil(page, `badge ${count}`, (n) => document.querySelector('#badge').dataset.count === String(n), count);
}

function item(page, title) {
  return page.locator('#list li', { has: page.locator('.title', { hasText: title }) });
}

/** Fills and submits the send form; resolves to what the page says.
 *  Like a user, it acts in the front tab: a background tab gets no
 *  animation frames, which Playwright's actionability checks wait for. */
async function send(page, fields) {
  await page.bringToFront();
  for (const [field, value] of Object.entries(fields)) {
    const input = page.locator(`#send-${field}`);
    if (field === 'priority') await input.selectOption(value);
    else await input.fill(value);
  }
  await page.locator('#send-status').evaluate((el) => { el.textContent = ''; });
  await page.locator('#send-form button[type=submit]').click();
  await waitUntil(page, 'the send form\'s answer', () => document.querySelector('#send-status').textContent !== '');
  return page.locator('#send-status').textContent();
}

/** Tokens for `user` from the demo's own session endpoint (to publish
 *  without the form). */
const session = (user, gateway = herald) => demoSession(gateway, user);

async function publish(gateway, publisherToken, user, notification) {
  const response = await fetch(`${gateway.url}/v1/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${publisherToken}` },
    body: JSON.stringify({ to: { users: [user] }, notification }),
  });
  const body = await response.json();
  assert.equal(response.status, 202, JSON.stringify(body));
  return body.results[0].id;
}

async function publishToTopic(gateway, publisherToken, topic, notification) {
  const response = await fetch(`${gateway.url}/v1/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${publisherToken}` },
    body: JSON.stringify({ to: { topic }, notification }),
  });
  const body = await response.json();
  assert.equal(response.status, 202, JSON.stringify(body));
  return body.id;
}

function assertNoProblems(...pages) {
  assert.deepEqual(pages.flatMap((p) => p.problems), []);
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

describe('the demo notification center', () => {
  test('the bell\'s panel: opens and closes by keyboard, relative times, older pages on scroll', async () => {
    const user = uniqueUser('panel');
    const { publisher_token: token } = await session(user);
    for (let i = 1; i <= 25; i += 1) {
      await publish(herald, token, user, { type: 'comment.mention', title: `Comment ${i}`, body: `Number ${i} of 25` });
    }
    await publish(herald, token, user, {
      type: 'build.failed', title: 'Build 7 failed', priority: 'high', url: '/builds/7', icon: '/icons/build.svg',
    });
    const context = await contextFor(user);
    await context.route(`${herald.url}/icons/build.svg`, (route) => route.fulfill({
      contentType: 'image/svg+xml',
      body: '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 20"><rect width="20" height="20" fill="#b42318"/></svg>',
    }));
    const page = await context.newPage();
    await page.goto(`${herald.url}/demo`);
    await live(page);
    assert.equal(await page.locator('#center').isHidden(), true, 'closed until the bell is pressed');
    assert.equal(await page.title(), '(26) Herald demo');

    await page.locator('#bell').focus();
    await page.keyboard.press('Enter');

    await page.locator('#center').waitFor();
    assert.equal(await page.locator('#bell').getAttribute('aria-expanded'), 'true');
    await item(page, 'Build 7 failed').waitFor();
    assert.equal(await item(page, 'Build 7 failed').locator('time').textContent(), 'just now');
    await page.screenshot({ path: `${SCREENSHOTS}/panel-light.png` });
    // Scrolling to the end of the panel loads the older page by itself.
    assert.equal(await page.locator('#list li').count(), 20);
    await page.locator('#load-more').scrollIntoViewIfNeeded();
    await waitUntil(page, 'the older page', () => document.querySelectorAll('#list li').length === 26);
    assert.equal(await item(page, 'Build 7 failed').locator('img.icon').getAttribute('src'), '/icons/build.svg');

    // A row works from the keyboard: Enter marks it clicked and opens its page.
    await item(page, 'Build 7 failed').focus();
    const [opened] = await Promise.all([page.waitForEvent('popup'), page.keyboard.press('Enter')]);
    assert.equal(new URL(opened.url()).pathname, '/builds/7');
    await opened.close();
    await page.locator('#list li[data-clicked="true"]', { hasText: 'Build 7 failed' }).waitFor({ state: 'attached' });

    await page.locator('#center-heading').focus();
    await page.keyboard.press('Escape');
    await page.locator('#center').waitFor({ state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'bell', 'the focus goes back to the bell');
    await context.close();
  });

  test('/demo?user= opens that user\'s center, in light and dark, at desktop and phone width', async () => {
    const user = uniqueUser('linked');
    const { publisher_token: token } = await session(user);
    await publish(herald, token, user, { type: 'comment.mention', title: 'Mina mentioned you', body: 'in “Q4 plan”' });
    const backgrounds = [];
    for (const [name, options] of [
      ['light', { colorScheme: 'light' }],
      ['dark', { colorScheme: 'dark' }],
      ['phone', { colorScheme: 'light', viewport: { width: 390, height: 844 } }],
    ]) {
      const context = await browser.newContext(options);
      context.setDefaultTimeout(WAIT);
      const page = await context.newPage();
      page.problems = [];
      page.on('pageerror', (error) => page.problems.push(error.message));

      await page.goto(`${herald.url}/demo?user=${encodeURIComponent(user)}`);

      await page.locator('#connection[data-state="open"]').waitFor();
      assert.equal(await page.locator('#user-input').inputValue(), user);
      await openPanel(page);
      await item(page, 'Mina mentioned you').waitFor();
      backgrounds.push(await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor));
      await page.screenshot({ path: `${SCREENSHOTS}/demo-${name}.png`, fullPage: true });
      assert.deepEqual(page.problems, []);
      await context.close();
    }
    assert.notEqual(backgrounds[0], backgrounds[1], 'dark follows prefers-color-scheme');
  });

  test('two tabs of one user stay in sync: send, read, delete', async () => {
    const user = uniqueUser('tabs');
    const context = await contextFor(user);
    const [tabA, tabB] = [await openTab(context), await openTab(context)];
    assert.equal(await tabA.locator('#user-input').inputValue(), user);

    const answer = await send(tabA, { title: 'Hello from tab A', body: 'a body', priority: 'high' });
    assert.match(answer, /^Stored for .* \(online\)\.$/);

    for (const tab of [tabA, tabB]) {
      await tab.locator('.toast', { hasText: 'Hello from tab A' }).waitFor();
      await item(tab, 'Hello from tab A').waitFor();
      await waitForBadge(tab, 1);
      assert.equal(await tab.title(), '(1) Herald demo');
      assert.equal(await item(tab, 'Hello from tab A').getAttribute('data-read'), 'false');
      assert.equal(await tab.locator('#list li').count(), 1);
    }

    // Read in tab B (a click marks it clicked, and so read): both badges go to 0.
    await tabB.bringToFront();
    await item(tabB, 'Hello from tab A').click();
    for (const tab of [tabA, tabB]) {
      await waitForBadge(tab, 0);
      await tab.locator('#list li[data-read="true"]').waitFor();
      assert.equal(await tab.locator('#badge').isHidden(), true);
      assert.equal(await tab.title(), 'Herald demo');
    }
    assert.equal(await item(tabB, 'Hello from tab A').getAttribute('data-clicked'), 'true');

    // Delete in tab A: gone from both.
    await tabA.bringToFront();
    await item(tabA, 'Hello from tab A').locator('.delete').click();
    for (const tab of [tabA, tabB]) {
      await item(tab, 'Hello from tab A').waitFor({ state: 'detached' });
      await tab.locator('#empty').waitFor();
    }

    // Mark all read, from tab B, for two new ones sent to this user from outside.
    const { publisher_token: token } = await session(user);
    await publish(herald, token, user, { type: 'team.invite', title: 'one' });
    await publish(herald, token, user, { type: 'team.invite', title: 'two' });
    await waitForBadge(tabA, 2);
    await waitForBadge(tabB, 2);
    await tabB.bringToFront();
    await tabB.locator('#mark-all').click();
    await waitForBadge(tabA, 0);
    await waitUntil(tabA, 'both read in tab A', () => document.querySelectorAll('#list li.unread').length === 0);
    assertNoProblems(tabA, tabB);
    await context.close();
  });

  test('a reloaded tab shows the history, page by page', async () => {
    const user = uniqueUser('history');
    const { publisher_token: token } = await session(user);
    const ids = [];
    for (let i = 1; i <= 25; i += 1) {
      ids.push(await publish(herald, token, user, { type: 'build.done', title: `Build ${i}` }));
    }
    const context = await contextFor(user);
    const tab = await openTab(context);

    await waitForBadge(tab, 25);
    const shown = () => tab.locator('#list li').evaluateAll((lis) => lis.map((li) => li.dataset.id));
    assert.deepEqual(await shown(), ids.slice(5).reverse(), 'the newest page, newest first');
    await tab.locator('#load-more').click();
    await waitUntil(tab, 'all 25', () => document.querySelectorAll('#list li').length === 25);
    assert.deepEqual(await shown(), ids.slice().reverse());
    assert.equal(await tab.locator('#load-more').isHidden(), true, 'no more pages');

    // Read one, then reload: the history comes back with its state.
    await item(tab, 'Build 25').click();
    await waitForBadge(tab, 24);
    await tab.reload();
    await live(tab);
    await waitForBadge(tab, 24);
    assert.equal(await item(tab, 'Build 25').getAttribute('data-read'), 'true');
    assert.equal(await item(tab, 'Build 24').getAttribute('data-read'), 'false');
    assert.equal(await tab.locator('#list li').count(), 20);
    assertNoProblems(tab);
    await context.close();
  });

  test('a category whose in-app channel is off is dropped', async () => {
    const user = uniqueUser('prefs');
    const context = await contextFor(user);
    const tab = await openTab(context);

    await tab.locator('#new-category').fill('marketing');
    await tab.locator('#add-category').click();
    await tab.getByLabel('marketing in-app').uncheck();
    await tab.locator('#prefs-form button[type=submit]').click();
    await tab.locator('#prefs-status', { hasText: 'Saved.' }).waitFor();

    const answer = await send(tab, { type: 'marketing.sale', title: '50% off everything' });
    assert.match(answer, /^Dropped for .*: preferences/);
    // Another category still arrives; once it has, the dropped one would have too.
    await send(tab, { type: 'comment.mention', title: 'After the sale' });
    await item(tab, 'After the sale').waitFor();
    await waitForBadge(tab, 1);
    assert.equal(await item(tab, '50% off everything').count(), 0);
    assert.equal(await tab.locator('.toast', { hasText: '50% off' }).count(), 0);

    // The stored document comes back on reload.
    await tab.reload();
    await live(tab);
    await tab.locator('#categories tr[data-category="marketing"]').waitFor();
    assert.equal(await tab.getByLabel('marketing in-app').isChecked(), false);
    assert.equal(await tab.getByLabel('marketing push').isChecked(), true);

    // A bad document is refused, with the API's message.
    await tab.locator('#quiet-enabled').check();
    await tab.locator('#quiet-timezone').fill('Mars/Olympus');
    await tab.locator('#prefs-form button[type=submit]').click();
    await tab.locator('#prefs-status', { hasText: '`Mars/Olympus` is not an IANA time zone' }).waitFor();
    assertNoProblems(tab);
    await context.close();
  });

  test('the API\'s errors are shown; notification text is never markup', async () => {
    const user = uniqueUser('errors');
    const context = await contextFor(user);
    const tab = await openTab(context);

    assert.equal(
      await send(tab, { title: '' }),
      '422: notification.title: must be 1-200 characters',
    );
    assert.match(await send(tab, { title: 'ok', type: 'Not A Type' }), /^422: notification\.type: must be/);
    assert.match(await send(tab, { type: 'a.b', to: 'two words' }), /^422: to\.users: `two words`: user id must not/);
    assert.equal(await tab.locator('#send-status').getAttribute('class'), 'status error');

    // A bad user id in the picker: refused by /demo/session, the old user stays.
    await tab.locator('#user-input').fill('a}b');
    await tab.locator('#user-form button').click();
    await tab.locator('#user-status', { hasText: 'user id must not contain whitespace' }).waitFor();
    assert.equal(await tab.locator('#connection').getAttribute('data-state'), 'open');

    // Markup in a notification is shown as text.
    const title = '<img src=x onerror="window.pwned = true">';
    await send(tab, { type: 'a.b', to: '', title, body: '<b>not bold</b>' });
    await item(tab, 'onerror').waitFor();
    assert.equal(await item(tab, 'onerror').locator('.title').textContent(), title);
    assert.equal(await tab.locator('#list img, #toasts img, #list b').count(), 0);
    assert.equal(await tab.evaluate(() => window.pwned), undefined);

    // Sound and push are off until switched on here (push is tested in
    // push.test.mjs: it needs a browser profile on disk).
    assert.equal(await tab.locator('#sound-toggle').isChecked(), false);
    await tab.locator('#sound-toggle').check();
    assert.equal(await tab.evaluate(() => localStorage.getItem('herald-demo:sound')), 'on');
    assert.equal(await tab.locator('#push-toggle').isChecked(), false);
    assertNoProblems(tab);
    await context.close();
  });
});

describe('topics', () => {
  // A gateway of their own: what these tests broadcast must not show up in
  // the other tests' lists.
  let gateway;
  before(async () => {
    gateway = await startHerald({ env: { HERALD__TOPICS__PUBLIC: 'announcements,status' } });
  });

  const toggle = (page, topic) => page.locator(`#topic-toggles input[data-topic="${topic}"]`);

  test('a followed topic is labelled and toasted, not counted; the form broadcasts to it', async () => {
    const user = uniqueUser('topic');
    const { publisher_token: token } = await session(user, gateway);
    const context = await contextFor(user);
    const tab = await openTab(context, gateway);
    // Every public topic is followed the first time.
    assert.equal(await toggle(tab, 'announcements').isChecked(), true);
    assert.equal(await toggle(tab, 'status').isChecked(), true);

    const id = await publishToTopic(gateway, token, 'announcements', { type: 'news.maintenance', title: 'Maintenance at 22:00' });
    const row = item(tab, 'Maintenance at 22:00');
    await row.waitFor();
    assert.equal(await row.getAttribute('data-id'), id);
    assert.equal(await row.getAttribute('data-topic'), 'announcements');
    assert.equal(await row.locator('.topic-label').textContent(), 'announcements');
    assert.equal(await row.getAttribute('class'), 'topic', 'no read state');
    assert.equal(await row.locator('.delete').count(), 0);
    await tab.locator('.toast', { hasText: 'Maintenance at 22:00' }).locator('.topic-label').waitFor();
    // The badge counts the inbox: an inbox notification published after the
    // topic's moves it to 1, not 2.
    await publish(gateway, token, user, { type: 'comment.mention', title: 'Inbox after the topic' });
    await item(tab, 'Inbox after the topic').waitFor();
    await waitForBadge(tab, 1);
    assert.equal(await item(tab, 'Inbox after the topic').getAttribute('data-topic'), null);

    // The send form targets a topic; another user's page gets it.
    const other = await contextFor(uniqueUser('topic-other'));
    const otherTab = await openTab(other, gateway);
    await tab.bringToFront();
    await tab.locator('#send-target').selectOption('status');
    assert.equal(await tab.locator('#send-to').isHidden(), true, 'no user to pick for a topic');
    assert.match(await send(tab, { type: 'status.incident', title: 'API degraded' }), /^Published to topic status as \d+-\d+\.$/);
    for (const page of [tab, otherTab]) {
      await item(page, 'API degraded').waitFor();
      assert.equal(await item(page, 'API degraded').getAttribute('data-topic'), 'status');
    }
    await waitForBadge(otherTab, 0);
    await waitForBadge(tab, 1);
    assertNoProblems(tab, otherTab);
    await context.close();
    await other.close();
  });

  test('unfollowing stops the topic and is remembered; following again brings its history', async () => {
    const user = uniqueUser('unfollow');
    const { publisher_token: token } = await session(user, gateway);
    await publishToTopic(gateway, token, 'status', { type: 'status.ok', title: 'Status before the page' });
    const context = await contextFor(user);
    const tab = await openTab(context, gateway);
    // The topic's history is listed with the inbox.
    await item(tab, 'Status before the page').waitFor();

    const streams = [];
    tab.on('request', (request) => request.url().includes('/v1/events?') && streams.push(new URL(request.url())));
    await toggle(tab, 'status').uncheck();
    await item(tab, 'Status before the page').waitFor({ state: 'detached' });
    await live(tab);
    await waitUntil(tab, 'the new stream', () => document.querySelector('#connection').dataset.state === 'open');
    assert.equal(streams.length, 1, 'one new stream');
    assert.equal(streams[0].searchParams.get('topics'), 'announcements');
    assert.ok(streams[0].searchParams.get('last_event_id'), 'the new stream resumes from the cursor');

    // Published while unfollowed: a later inbox notification arrives, the
    // topic's does not; the other topic still does.
    await publishToTopic(gateway, token, 'status', { type: 'status.ok', title: 'Status while unfollowed' });
    await publishToTopic(gateway, token, 'announcements', { type: 'news.release', title: 'Still following this' });
    await publish(gateway, token, user, { type: 'comment.mention', title: 'Inbox marker' });
    await item(tab, 'Inbox marker').waitFor();
    await item(tab, 'Still following this').waitFor();
    assert.equal(await item(tab, 'Status while unfollowed').count(), 0);

    // A reload keeps the choice, and lists the followed topic's history.
    await tab.reload();
    await live(tab);
    assert.equal(await toggle(tab, 'status').isChecked(), false);
    assert.equal(await toggle(tab, 'announcements').isChecked(), true);
    await item(tab, 'Still following this').waitFor();
    await item(tab, 'Inbox marker').waitFor();
    assert.equal(await item(tab, 'Status while unfollowed').count(), 0);

    // Following again: the topic's history comes back, newest first with
    // the rest (older broadcasts, from the test before, come after these).
    await toggle(tab, 'status').check();
    await item(tab, 'Status while unfollowed').waitFor();
    await item(tab, 'Status before the page').waitFor();
    const titles = await tab.locator('#list li .title').allTextContents();
    assert.deepEqual(titles.slice(0, 4), [
      'Inbox marker', 'announcementsStill following this', 'statusStatus while unfollowed', 'statusStatus before the page',
    ]);
    assertNoProblems(tab);
    await context.close();
  });
});

describe('token expiry', () => {
  test('the page takes a new token and resumes with its cursor: nothing lost, nothing repeated', async () => {
    // Sessions of 7 s, `token_expiring` 5 s before: the page renews about
    // 2 s after each stream opens.
    const gateway = await startHerald({
      env: { HERALD__DEMO__SESSION_TTL: '7s', HERALD__STREAM__TOKEN_EXPIRING_BEFORE: '5s' },
    });
    const user = uniqueUser('expiry');
    const { publisher_token: token } = await session(user, gateway);
    const context = await contextFor(user);
    const tab = await openTab(context, gateway);
    const sessions = [];
    tab.on('request', (request) => request.url().endsWith('/demo/session') && sessions.push(request.url()));
    // Hold the renewed stream's request: the old stream is closed by then, so
    // a notification published meanwhile reaches the new one only through
    // its cursor.
    let release;
    const renewal = new Promise((resolve) => { release = resolve; });
    let holding = true;
    await tab.route('**/v1/events?*', (route) => {
      if (!holding) return route.continue();
      holding = false;
      release(route);
    });

    await publish(gateway, token, user, { type: 'tick.tock', title: 'Before the renewal' });
    await item(tab, 'Before the renewal').waitFor();
    const held = await Promise.race([renewal, timeout(WAIT).then(() => null)]);
    assert.ok(held, `no renewed stream within ${WAIT} ms`);
    const url = new URL(held.request().url());
    assert.ok(url.searchParams.get('last_event_id'), `the renewed stream resumes from a cursor: ${url.pathname}`);
    assert.equal(sessions.length, 1, 'a new session was fetched first');
    await publish(gateway, token, user, { type: 'tick.tock', title: 'During the renewal' });
    await held.continue();
    await item(tab, 'During the renewal').waitFor();
    await publish(gateway, token, user, { type: 'tick.tock', title: 'After the renewal' });
    await item(tab, 'After the renewal').waitFor();

    await waitForBadge(tab, 3);
    const titles = await tab.locator('#list li .title').allTextContents();
    assert.deepEqual(titles, ['After the renewal', 'During the renewal', 'Before the renewal']);
    assert.equal(await tab.locator('#connection').getAttribute('data-state'), 'open');
    assertNoProblems(tab);
    await context.close();
  });
});
