// A fake push service on loopback for bench/push/run.sh.
//
//   node sink.mjs --port PORT --devices devices.json [--verify-every 500]
//
// POST /push/<device> answers 201 (RFC 8030 §5) after checking the headers a
// push service requires: `Content-Encoding: aes128gcm`, `TTL`, and
// `Authorization: vapid t=<JWT>, k=<key>`. It counts each request and each
// distinct (device, Topic) pair: Herald sets `Topic` to the notification's
// entry id, so a push sent twice (taken over after a node died) counts as a
// duplicate, not as another notification. Every `--verify-every`-th request
// (and the first of a run) is also opened the way a browser would: the
// payload decrypted with the device's private key (RFC 8291) and the JWT's
// ES256 signature checked against `k` (RFC 8292), so a fast wrong answer
// cannot pass for a fast right one.
//
// GET /count: the run so far as JSON. POST /reset: starts a new run.
// Listens on 127.0.0.1 only; exits on SIGTERM.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    devices: { type: 'string' },
    'verify-every': { type: 'string', default: '500' },
  },
});
const verifyEvery = Number(args['verify-every']);
const devices = new Map(JSON.parse(fs.readFileSync(args.devices, 'utf8')).map((d) => [d.name, d]));

const now = () => performance.timeOrigin + performance.now();

// How long requests waited for the sink's one thread (GC, a busy core): if
// this is large, the sink, not the sender, set the pace.
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
loopDelay.enable();

let run;
function reset() {
  loopDelay.reset();
  run = {
    requests: 0,
    // (device, Topic) pairs seen, as "device topic".
    seen: new Set(),
    duplicates: 0,
    bad: 0,
    badReasons: {},
    unknownDevice: 0,
    verified: 0,
    verifyFailed: 0,
    verifyReasons: {},
    plaintextBytes: null,
    bodyBytes: null,
    sample: null,
    firstAt: null,
    lastAt: null,
    perDevice: new Map(),
  };
}
reset();

function fail(reasons, why) {
  reasons[why] = (reasons[why] ?? 0) + 1;
}

// RFC 8291 §3.4 and RFC 8188: the body is salt (16) | rs (4) | idlen (1) |
// keyid (the sender's 65-byte ephemeral key) | one record (ciphertext + tag).
function decrypt(device, body) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const senderPublic = body.subarray(21, 21 + idlen);
  const record = body.subarray(21 + idlen);
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(device.private_key, 'base64url'));
  const shared = ecdh.computeSecret(senderPublic);
  const uaPublic = Buffer.from(device.p256dh, 'base64url');
  const info = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, senderPublic]);
  const ikm = Buffer.from(crypto.hkdfSync('sha256', shared, Buffer.from(device.auth, 'base64url'), info, 32));
  const cek = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 0x02, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) throw new Error('no last-record delimiter');
  return padded.subarray(0, end);
}

// RFC 8292: `t` is an ES256 JWT for this origin, signed by the key in `k`.
function verifyVapid(token, key, origin) {
  const [head, claims, signature] = token.split('.');
  const point = Buffer.from(key, 'base64url');
  const publicKey = crypto.createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') },
    format: 'jwk',
  });
  const ok = crypto.verify('sha256', Buffer.from(`${head}.${claims}`), { key: publicKey, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature, 'base64url'));
  if (!ok) throw new Error('bad JWT signature');
  const c = JSON.parse(Buffer.from(claims, 'base64url'));
  if (c.aud !== origin) throw new Error(`JWT aud ${c.aud} is not ${origin}`);
  if (!(c.exp > Date.now() / 1000)) throw new Error('JWT expired');
  if (!c.sub) throw new Error('JWT has no sub');
}

const origin = `http://127.0.0.1:${args.port}`;
const vapid = /^vapid t=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+), k=([A-Za-z0-9_-]+)$/;

function onPush(req, res, name, body) {
  const at = now();
  run.requests++;
  run.firstAt ??= at;
  run.lastAt = at;
  const device = devices.get(name);
  const h = req.headers;
  const auth = vapid.exec(h.authorization ?? '');
  let bad = null;
  if (!device) bad = 'unknown device';
  else if (h['content-encoding'] !== 'aes128gcm') bad = 'content-encoding';
  else if (!/^\d+$/.test(h.ttl ?? '')) bad = 'ttl';
  else if (!auth) bad = 'authorization';
  else if (!h.topic) bad = 'topic';
  else if (body.length < 86 + 17) bad = 'body too short';
  if (bad) {
    run.bad++;
    fail(run.badReasons, bad);
    res.writeHead(400).end();
    return;
  }
  const key = `${name} ${h.topic}`;
  if (run.seen.has(key)) run.duplicates++;
  else run.seen.add(key);
  run.perDevice.set(name, (run.perDevice.get(name) ?? 0) + 1);
  if (run.requests === 1 || run.requests % verifyEvery === 0) {
    try {
      const plaintext = decrypt(device, body);
      const notification = JSON.parse(plaintext);
      if (notification.id !== h.topic) throw new Error(`payload id ${notification.id} is not the Topic ${h.topic}`);
      verifyVapid(auth[1], auth[2], origin);
      run.verified++;
      run.plaintextBytes = plaintext.length;
      run.bodyBytes = body.length;
      run.sample = notification;
    } catch (e) {
      run.verifyFailed++;
      fail(run.verifyReasons, String(e.message ?? e));
    }
  }
  res.writeHead(201, { location: `/message/${run.requests}` }).end();
}

function summary() {
  const counts = [...run.perDevice.values()];
  const { seen, perDevice, ...rest } = run;
  return {
    ...rest,
    distinct: seen.size,
    devices: perDevice.size,
    perDeviceMin: counts.length ? Math.min(...counts) : 0,
    perDeviceMax: counts.length ? Math.max(...counts) : 0,
    loopDelayMs: { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const push = /^\/push\/([A-Za-z0-9_-]+)$/.exec(req.url);
    if (req.method === 'POST' && push) return onPush(req, res, push[1], Buffer.concat(chunks));
    if (req.method === 'GET' && req.url === '/count') {
      return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(summary()));
    }
    if (req.method === 'POST' && req.url === '/reset') {
      reset();
      return res.writeHead(204).end();
    }
    res.writeHead(404).end();
  });
});
// Longer than any client's idle pool timeout (reqwest's is 90 s), so the
// sink never closes a connection a sender is about to reuse.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(Number(args.port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
