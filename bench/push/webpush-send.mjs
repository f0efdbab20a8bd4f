// The peer: the Node.js `web-push` library (npm) sending the benchmark's
// pushes to the same fake push service Herald sends to.
//
//   node webpush-send.mjs --devices devices.json --vapid vapid.json --n 20000 \
//       --concurrency 64 [--vapid-mode per-request|reused]
//
// Push i goes to device i mod D, with the notification Herald would send
// for it (the same JSON shape and size: id, created_at, read, clicked and
// the published fields), `TTL` 86400 (Herald's default push.ttl), `Urgency`
// normal and `Topic` the id, as Herald sets them. At most --concurrency
// sends are in flight.
//
// --vapid-mode per-request (the default): `vapidDetails` on every call, so
// web-push signs a new ES256 JWT per push, which is what the library does
// when used as documented. reused: one `getVapidHeaders()` up front and its
// `Authorization` passed as a header on every call, as Herald does (one
// token per push-service origin).
//
// web-push only speaks HTTPS (it calls https.request whatever the
// endpoint's scheme). The sink, like the one Herald sends to, is plain HTTP
// on loopback, so web-push is given an https.Agent whose connections are
// plain TCP: both senders then do the same work (encrypt, sign, HTTP/1.1
// over kept-alive connections, at most --concurrency of them) and TLS is in
// neither figure.
//
// Prints one JSON line: {n, ok, failed, startedAt, finishedAt, cpuMs, ...}
// (times are epoch ms, comparable with the sink's).

import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { parseArgs } from 'node:util';
import webpush from 'web-push';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string' },
    vapid: { type: 'string' },
    n: { type: 'string' },
    concurrency: { type: 'string', default: '64' },
    'vapid-mode': { type: 'string', default: 'per-request' },
    subject: { type: 'string', default: 'mailto:bench@example.com' },
  },
});
const devices = JSON.parse(fs.readFileSync(args.devices, 'utf8'));
const vapid = JSON.parse(fs.readFileSync(args.vapid, 'utf8'));
const n = Number(args.n);
const concurrency = Number(args.concurrency);
const reuse = args['vapid-mode'] === 'reused';
if (!reuse && args['vapid-mode'] !== 'per-request') throw new Error(`unknown --vapid-mode ${args['vapid-mode']}`);

class PlainTcpAgent extends https.Agent {
  createConnection(options) {
    return net.createConnection({ host: options.host, port: options.port });
  }
}
const agent = new PlainTcpAgent({ keepAlive: true, maxSockets: concurrency });

const vapidDetails = { subject: args.subject, publicKey: vapid.public_key, privateKey: vapid.private_key };
const origin = new URL(devices[0].endpoint).origin;
const reusedHeaders = reuse
  ? webpush.getVapidHeaders(origin, vapidDetails.subject, vapidDetails.publicKey, vapidDetails.privateKey, 'aes128gcm')
  : null;

// What Herald's worker encrypts for a notification published as
// bench/push/notification.json: the stored fields behind id, created_at,
// read and clicked (wire::notification::render_notification).
const published = JSON.parse(fs.readFileSync(new URL('./notification.json', import.meta.url), 'utf8'));
const base = Date.now();
const createdAt = new Date(base).toISOString();
function payloadFor(i) {
  // Herald's ids are `<ms>-<seq>` of each user's stream: one per ms here.
  const id = `${base + i}-0`;
  const body = { id, created_at: createdAt, read: false, clicked: false, ...published };
  return { id, text: JSON.stringify(body) };
}

const now = () => performance.timeOrigin + performance.now();
let next = 0;
let ok = 0;
let failed = 0;
const errors = {};
let payloadBytes = 0;

async function lane() {
  while (next < n) {
    const i = next++;
    const device = devices[i % devices.length];
    const { id, text } = payloadFor(i);
    payloadBytes = Buffer.byteLength(text);
    const options = { TTL: 86400, urgency: 'normal', topic: id, agent };
    if (reuse) options.headers = { Authorization: reusedHeaders.Authorization };
    else options.vapidDetails = vapidDetails;
    try {
      await webpush.sendNotification({ endpoint: device.endpoint, keys: { p256dh: device.p256dh, auth: device.auth } },
        text, options);
      ok++;
    } catch (e) {
      failed++;
      const why = e.statusCode ? `HTTP ${e.statusCode}` : String(e.message ?? e);
      errors[why] = (errors[why] ?? 0) + 1;
    }
  }
}

const cpu0 = process.cpuUsage();
const startedAt = now();
await Promise.all(Array.from({ length: concurrency }, lane));
const finishedAt = now();
const cpu = process.cpuUsage(cpu0);
agent.destroy();
process.stdout.write(`${JSON.stringify({
  sender: 'web-push',
  version: JSON.parse(fs.readFileSync(new URL('./node_modules/web-push/package.json', import.meta.url))).version,
  vapidMode: args['vapid-mode'],
  concurrency,
  n,
  ok,
  failed,
  errors,
  payloadBytes,
  startedAt,
  finishedAt,
  seconds: (finishedAt - startedAt) / 1000,
  cpuMs: (cpu.user + cpu.system) / 1000,
})}\n`);
