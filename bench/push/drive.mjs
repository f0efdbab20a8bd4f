// Drives a benchmark run for bench/push/run.sh; prints one JSON line.
//
//   node drive.mjs subscribe --herald URL --devices devices.json
//       Gives each device's user that device (POST /v1/push/subscriptions),
//       with a user token minted from HERALD__AUTH__SECRET (HS256, the
//       claims `herald token --sub` writes).
//
//   node drive.mjs herald --herald URL --sink URL --users U --n N \
//       --pids herald=PID,redis=PID,sink=PID [--kill PID --kill-after K]
//       Publishes N notifications (N/U requests to all U users, none of
//       whom has a stream open, so each is queued for push) with the
//       publisher token in HERALD_PUBLISHER_TOKEN, and waits until the sink
//       has every one of them (distinct device+Topic pairs). Timed from the
//       first publish to the sink's last push. With --kill, SIGKILLs that
//       pid once the sink has counted K pushes.
//
//   node drive.mjs webpush --sink URL --n N --cpus C --pids redis=PID,sink=PID \
//       --sender "<webpush-send.mjs options>"
//       Runs webpush-send.mjs pinned to C and waits the same way. Timed
//       from the library's first send to the sink's last push.
//
// Both report each pid's CPU over the run, each core's busy time, a 500 ms
// timeline and the sink's counts. Every loop is bounded: N/U publishes, a
// poll every 20 ms until --timeout (120 s). Traffic goes only to the URLs
// given, which run.sh makes loopback.

import crypto from 'node:crypto';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';

const [command, ...rest] = process.argv.slice(2);
const { values: args } = parseArgs({
  args: rest,
  options: {
    herald: { type: 'string' },
    sink: { type: 'string' },
    devices: { type: 'string' },
    users: { type: 'string' },
    n: { type: 'string' },
    pids: { type: 'string', default: '' },
    kill: { type: 'string' },
    'kill-after': { type: 'string' },
    timeout: { type: 'string', default: '120' },
    'in-flight': { type: 'string', default: '2' },
    cpus: { type: 'string', default: '1' },
    sender: { type: 'string' },
  },
});

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hs256(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${part({ typ: 'JWT', alg: 'HS256' })}.${part(claims)}`;
  const secret = process.env.HERALD__AUTH__SECRET;
  if (!secret) throw new Error('HERALD__AUTH__SECRET is not set');
  return `${unsigned}.${crypto.createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

async function subscribe() {
  const devices = JSON.parse(fs.readFileSync(args.devices, 'utf8'));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  let next = 0;
  async function lane() {
    while (next < devices.length) {
      const d = devices[next++];
      const res = await fetch(`${args.herald}/v1/push/subscriptions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${hs256({ sub: d.user, exp })}`, 'content-type': 'application/json' },
        body: JSON.stringify({ endpoint: d.endpoint, expirationTime: null, keys: { p256dh: d.p256dh, auth: d.auth } }),
      });
      if (res.status !== 201) throw new Error(`subscribing ${d.user}: HTTP ${res.status} ${await res.text()}`);
    }
  }
  await Promise.all(Array.from({ length: 16 }, lane));
  console.error(`subscribed ${devices.length} devices`);
}

// utime + stime of a process, in ms (clock ticks are 1/100 s here).
function cpuMs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null; // gone (the killed node)
  }
}

// Busy and total ticks of each core, from /proc/stat.
function cores() {
  return fs.readFileSync('/proc/stat', 'utf8').split('\n').filter((l) => /^cpu\d/.test(l)).map((l) => {
    const t = l.split(/\s+/).slice(1).map(Number);
    return { busy: t[0] + t[1] + t[2] + t[5] + t[6] + t[7], total: t.slice(0, 8).reduce((a, b) => a + b, 0) };
  });
}

async function sinkCount() {
  const res = await fetch(`${args.sink}/count`);
  return res.json();
}

// Polls the sink (every 20 ms, until `deadline`) until it has `n` distinct
// pushes, sampling `pids` (the first one, the sender, per 500 ms) and the
// cores; SIGKILLs --kill once the sink has --kill-after pushes. `sender` is
// a promise that settles when the sender is done (or never, for Herald).
async function watch({ n, pids, startedAt, deadline, cpuBefore, coresBefore, sender }) {
  let senderDone = false;
  sender?.then(() => { senderDone = true; }, () => { senderDone = true; });
  let killed = null;
  let count = await sinkCount();
  const timeline = [];
  const first = Object.keys(pids)[0];
  let mark = { at: startedAt, cpu: cpuBefore[first], pushes: 0 };
  while (count.distinct < n && now() < deadline && !(senderDone && count.requests >= n)) {
    if (now() - mark.at >= 500) {
      const next = { at: now(), cpu: cpuMs(pids[first]), pushes: count.requests };
      if (mark.cpu != null && next.cpu != null) {
        timeline.push([Math.round((100 * (next.cpu - mark.cpu)) / (next.at - mark.at)), next.pushes - mark.pushes]);
      }
      mark = next;
    }
    if (args.kill && !killed && count.requests >= Number(args['kill-after'])) {
      process.kill(Number(args.kill), 'SIGKILL');
      killed = { at: now(), sinkRequests: count.requests, sinkDistinct: count.distinct };
    }
    await sleep(20);
    count = await sinkCount();
  }
  const doneAt = now();
  const coresAfter = cores();
  const cpuAfter = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid)]));
  // Anything still on its way (a duplicate) shows within this.
  await sleep(args.kill ? 4000 : 300);
  count = await sinkCount();

  const seconds = ((count.distinct >= n ? count.lastAt : doneAt) - startedAt) / 1000;
  const wall = doneAt - startedAt;
  const cpu = {};
  cpuBefore.driver ??= 0;
  cpuAfter.driver = cpuMs(process.pid);
  for (const k of [...Object.keys(pids), 'driver']) {
    if (cpuBefore[k] != null && cpuAfter[k] != null) {
      cpu[k] = { ms: cpuAfter[k] - cpuBefore[k], pct: Math.round((1000 * (cpuAfter[k] - cpuBefore[k])) / wall) / 10 };
    }
  }
  return {
    seconds,
    perSecond: Math.round(count.distinct / seconds),
    complete: count.distinct >= n,
    lost: Math.max(0, n - count.distinct),
    killed,
    cpu,
    // Per 500 ms: [the sender's CPU, % of one core; pushes the sink got].
    timeline,
    // Each core's busy time over the run, %, all processes: what the rest
    // of the machine did shows as the difference from the pids' CPU.
    coreBusy: coresAfter.map((c, i) =>
      Math.round((1000 * (c.busy - coresBefore[i].busy)) / (c.total - coresBefore[i].total)) / 10),
    sink: count,
  };
}

function pidsArg() {
  return Object.fromEntries(args.pids.split(',').filter(Boolean).map((p) => p.split('=')));
}

async function herald() {
  const users = Number(args.users);
  const n = Number(args.n);
  if (n % users !== 0) throw new Error('--n must be a multiple of --users');
  const token = process.env.HERALD_PUBLISHER_TOKEN;
  const pids = pidsArg();
  const notification = JSON.parse(fs.readFileSync(new URL('./notification.json', import.meta.url), 'utf8'));
  const to = { users: Array.from({ length: users }, (_, i) => `u${i + 1}`) };
  const body = JSON.stringify({ to, notification });

  await fetch(`${args.sink}/reset`, { method: 'POST' });
  const coresBefore = cores();
  const cpuBefore = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid)]));
  cpuBefore.driver = cpuMs(process.pid);
  const startedAt = now();
  const deadline = startedAt + Number(args.timeout) * 1000;
  let queued = 0;
  let notQueued = 0;
  let requests = 0;
  async function publisher() {
    while (requests < n / users) {
      requests++;
      const res = await fetch(`${args.herald}/v1/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
      });
      if (res.status !== 202) throw new Error(`publish: HTTP ${res.status} ${await res.text()}`);
      for (const r of (await res.json()).results) {
        if (r.push === 'queued') queued++;
        else notQueued++;
      }
    }
  }
  await Promise.all(Array.from({ length: Number(args['in-flight']) }, publisher));
  const publishSeconds = (now() - startedAt) / 1000;
  const result = await watch({ n, pids, startedAt, deadline, cpuBefore, coresBefore });
  process.stdout.write(`${JSON.stringify({ sender: 'herald', n, users, queued, notQueued, publishSeconds, ...result })}\n`);
}

// web-push: webpush-send.mjs on --cpus, its own figures merged in.
async function webpush() {
  const n = Number(args.n);
  const pids = pidsArg();
  await fetch(`${args.sink}/reset`, { method: 'POST' });
  const coresBefore = cores();
  const child = spawn('taskset', ['-c', args.cpus, process.execPath,
    new URL('./webpush-send.mjs', import.meta.url).pathname, ...args.sender.split(' ')],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  const out = [];
  child.stdout.on('data', (c) => out.push(c));
  const exited = new Promise((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`webpush-send exited ${code}`)))));
  const all = { sender: String(child.pid), ...pids };
  const cpuBefore = Object.fromEntries(Object.entries(all).map(([k, pid]) => [k, cpuMs(pid)]));
  cpuBefore.driver = cpuMs(process.pid);
  const startedAt = now();
  const result = await watch({
    n, pids: all, startedAt, deadline: startedAt + Number(args.timeout) * 1000, cpuBefore, coresBefore, sender: exited,
  });
  await exited;
  const sent = JSON.parse(Buffer.concat(out).toString());
  // Timed from the library's first send, not from node's start-up; its CPU
  // from its own count (process.cpuUsage over the sends).
  result.seconds = (result.sink.lastAt - sent.startedAt) / 1000;
  result.perSecond = Math.round(result.sink.distinct / result.seconds);
  result.cpu.sender = { ms: sent.cpuMs, pct: Math.round((1000 * sent.cpuMs) / (sent.finishedAt - sent.startedAt)) / 10 };
  process.stdout.write(`${JSON.stringify({ ...sent, ...result, sender: 'web-push' })}\n`);
}

if (command === 'subscribe') await subscribe();
else if (command === 'herald') await herald();
else if (command === 'webpush') await webpush();
else throw new Error('usage: drive.mjs subscribe|herald|webpush ...');
