// What every browser test needs: the real `herald` binary as a child process
// on a free loopback port, Chromium's path and flags, and bounded waits.
// Each test file imports these; nothing here sleeps for a fixed time.

import { spawn } from 'node:child_process';
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
