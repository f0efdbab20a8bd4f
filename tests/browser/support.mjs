// What every browser test needs: the real `herald` binary as a child process
// on a free loopback port, Chromium's path and flags, and bounded waits.
// Each test file imports these; nothing here sleeps for a fixed time.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** The debug binary (HERALD_BIN overrides it). */
export const HERALD_BIN = process.env.HERALD_BIN ?? fileURLToPath(new URL('../../target/debug/herald', import.meta.url));
/** Debian's chromium (CHROMIUM overrides it). */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The flags every test browser runs with. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

const gateways = [];

/**
 * Starts `herald serve [args]` (memory engine unless `env` says otherwise) on
 * a free loopback port; resolves once it answers /healthz, to
 * `{child, url, output, exited}`. With `--demo` the banner names the port;
 * otherwise the port comes from the "herald serving" log line.
 */
export async function startHerald({ args = ['--demo'], env = {} } = {}) {
  const child = spawn(HERALD_BIN, ['serve', ...args], {
    env: {
      ...process.env,
      // Port 0: the kernel picks a free port; the log names it.
      HERALD__SERVER__LISTEN: '127.0.0.1:0',
      HERALD__ENGINE__KIND: 'memory',
      HERALD__LOG__LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const gateway = { child, output: '' };
  gateways.push(gateway);
  child.stdout.on('data', (chunk) => { gateway.output += chunk; });
  child.stderr.on('data', (chunk) => { gateway.output += chunk; });
  gateway.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));

  const listening = /Herald demo is running on (http:\/\/127\.0\.0\.1:\d+)|listen\W+127\.0\.0\.1:(\d+)/;
  await waitFor(() => listening.test(gateway.output) || child.exitCode !== null, 20000, 'herald to start');
  const match = gateway.output.match(listening);
  if (!match) throw new Error(`herald exited at start:\n${gateway.output}`);
  gateway.url = match[1] ?? `http://127.0.0.1:${match[2]}`;
  await waitFor(() => fetch(`${gateway.url}/healthz`).then((r) => r.ok, () => false), 20000,
    `herald to answer /healthz:\n${gateway.output}`);
  return gateway;
}

/** SIGTERM, then SIGKILL if it has not exited within 15 s. */
export async function stopHerald(gateway) {
  if (gateway.child.exitCode !== null) return;
  gateway.child.kill('SIGTERM');
  const stopped = await Promise.race([gateway.exited.then(() => true), timeout(15000).then(() => false)]);
  if (!stopped) {
    gateway.child.kill('SIGKILL');
    await gateway.exited;
  }
}

/** Stops every gateway this process started. */
export function stopAll() {
  return Promise.all(gateways.map(stopHerald));
}

// A crash of the test process must not leave a gateway behind.
process.on('exit', () => gateways.forEach((g) => g.child.exitCode === null && g.child.kill('SIGKILL')));

/** Resolves after `ms`; never keeps the process alive by itself. */
export function timeout(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Polls `check` (sync or async) until it returns something truthy, which
 *  it resolves to; throws naming `what` after `ms`. */
export async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await timeout(25);
  }
}

/** The HS256 secret the tests' gateways share, so a token works on any node. */
export const SECRET = 'browser-tests-secret-of-at-least-32-bytes';

/** An HS256 JWT for `sub`, valid `ttlSeconds`, signed with SECRET (what an
 *  app's backend would mint); `publisher` adds the publish scope. */
export function mintToken(sub, { ttlSeconds = 3600, publisher = false } = {}) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...(publisher && { scope: 'publish' }) };
  const unsigned = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

/** Starts a throwaway `redis-server` on a free loopback port (no
 *  persistence); resolves to `{url, stop}`. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  redisServers.push(child);
  await waitFor(() => /Ready to accept connections/.test(output) || child.exitCode !== null, 10000, 'redis-server to start');
  if (child.exitCode !== null) throw new Error(`redis-server exited:\n${output}`);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => { child.kill('SIGKILL'); await exited; },
  };
}

const redisServers = [];
process.on('exit', () => redisServers.forEach((child) => child.exitCode === null && child.kill('SIGKILL')));

/** A port the kernel says is free now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A gauge or counter from the gateway's /metrics (the sum of its series). */
export async function metric(gateway, name) {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  return text.split('\n')
    .filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

/** `POST /demo/session` for `user` on a demo gateway: `{user, token,
 *  publisher_token, topics, expires_at}`. */
export async function demoSession(gateway, user) {
  const response = await fetch(`${gateway.url}/demo/session`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  if (response.status !== 200) throw new Error(`/demo/session: ${response.status} ${await response.text()}`);
  return response.json();
}

/** POST /v1/publish to `user`; resolves to the new notification's id. */
export async function publish(gateway, user, notification) {
  const response = await fetch(`${gateway.url}/v1/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${mintToken('backend', { publisher: true })}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ to: { users: [user] }, notification }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`publish: ${response.status} ${JSON.stringify(body)}`);
  return body.results[0].id;
}
