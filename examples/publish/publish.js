#!/usr/bin/env node
// Publish one Herald notification straight into Redis with FCALL herald_publish
// (node-redis v5; v4 has the same fCall and sendCommand).
//
//   npm ci
//   REDIS_URL=redis://127.0.0.1:6379 node publish.js alice
//   node publish.js alice '{"type":"billing.invoice","title":"Invoice ready"}' invoice-2041
//
// Arguments: USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]
// Environment: REDIS_URL (default redis://127.0.0.1:6379); HERALD_USER and
// IDEMPOTENCY_KEY stand in for the missing arguments.
// Prints the new entry id on stdout. Exits 1 when Herald refuses the
// notification (HERALD_INVALID / HERALD_TOO_LARGE), 2 on a usage error,
// 3 when Redis cannot be reached or fails otherwise.

import { createClient } from 'redis';

const [userArg, jsonArg, keyArg] = process.argv.slice(2);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const user = userArg || process.env.HERALD_USER;
const idempotencyKey = keyArg || process.env.IDEMPOTENCY_KEY || '';

if (!user) {
  console.error('usage: node publish.js USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]  (or set HERALD_USER)');
  process.exit(2);
}

// Any JSON object with Herald's notification fields: type and title are
// required; body, url, icon, priority (low/normal/high) and data are optional.
const notification = jsonArg ?? JSON.stringify({
  type: 'order.shipped',
  title: 'Your order has shipped',
  body: 'Order #991 is on its way.',
  url: '/orders/991',
  priority: 'normal',
  data: { order: 991 },
});

// Every key of a user carries the hash tag {u:<user>}; the function takes the
// user's base key and derives the others from it.
const key = `herald:{u:${user}}`;
const args = idempotencyKey ? [notification, idempotencyKey] : [notification];

const client = createClient({
  url: redisUrl,
  // Fail fast instead of retrying forever when Redis is down.
  socket: { connectTimeout: 5000, reconnectStrategy: false },
});
// Errors also surface as rejected promises below; without a listener an
// 'error' event would crash the process with a stack trace.
client.on('error', () => {});

let exitCode = 0;
try {
  await client.connect();
  // Same as client.sendCommand(['FCALL', 'herald_publish', '1', key, ...args]).
  const id = await client.fCall('herald_publish', { keys: [key], arguments: args });
  if (id === null) {
    // Not an error: the user's preferences turn this category off in-app.
    console.error(`not stored: ${user}'s preferences turn this category off in-app`);
  } else {
    console.log(id);
  }
} catch (err) {
  const message = err && err.message ? err.message : String(err);
  if (/^HERALD_(INVALID|TOO_LARGE) /.test(message)) {
    console.error(`herald refused the notification: ${message}`);
    exitCode = 1;
  } else if (/Function not found/i.test(message)) {
    console.error(`${message}: no Herald gateway has loaded its function library into this Redis yet (start one)`);
    exitCode = 3;
  } else {
    console.error(`publish failed: ${message}`);
    exitCode = 3;
  }
} finally {
  if (client.isOpen) {
    // v5 names it close(); v4 quit().
    await (client.close ? client.close() : client.quit()).catch(() => {});
  }
}
process.exit(exitCode);
