// The tables bench/push/run.sh prints, from the JSON lines it wrote.
//
//   node summarize.mjs OUT_DIR        medians of every configuration (Markdown)
//   node summarize.mjs --line FILE    one run, one line
//   node summarize.mjs --other FILE SERVER_CPU OTHER_CPU
//                                     % of a core other processes took in it

import fs from 'node:fs';
import path from 'node:path';

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x) => Math.round(x).toLocaleString('en-US');
const pct = (r, who) => (r.cpu?.[who]?.pct ?? NaN);

function config(r) {
  return r.sender === 'herald' ? 'herald' : `web-push, vapid ${r.vapidMode}, c ${r.concurrency}`;
}

function line(r) {
  const sink = r.sink;
  const parts = [
    `${config(r)}: ${fmt(r.perSecond)} pushes/s (${r.seconds.toFixed(2)} s for ${fmt(sink.distinct)}/${fmt(r.n)})`,
    `lost ${r.lost}, duplicated ${sink.duplicates}, bad ${sink.bad}, verified ${sink.verified}/${sink.verified + sink.verifyFailed}`,
    `cpu: ${Object.entries(r.cpu).map(([k, v]) => `${k} ${v.pct} %`).join(', ')}`,
    `cores busy: ${r.coreBusy.map((b, i) => `${i}: ${b} %`).join(', ')}`,
  ];
  if (r.killed) parts.push(`killed after ${fmt(r.killed.sinkRequests)} pushes`);
  if (sink.verifyFailed) parts.push(`VERIFY FAILED: ${JSON.stringify(sink.verifyReasons)}`);
  if (sink.bad) parts.push(`BAD: ${JSON.stringify(sink.badReasons)}`);
  return parts.join('; ');
}

// What other processes took: of the sender's core beyond the sender, or of
// the other core beyond the sink, redis and the driver (% of a core).
function other(r, serverCpu, otherCpu) {
  const c = (k) => r.cpu[k]?.pct ?? 0;
  const server = r.coreBusy[serverCpu] - c(r.sender === 'herald' ? 'herald' : 'sender');
  const rest = r.coreBusy[otherCpu] - c('sink') - c('redis') - c('driver');
  return Math.max(server, rest).toFixed(1);
}

if (process.argv[2] === '--other') {
  console.log(other(JSON.parse(fs.readFileSync(process.argv[3], 'utf8')), Number(process.argv[4]), Number(process.argv[5])));
  process.exit(0);
}
if (process.argv[2] === '--line') {
  console.log(line(JSON.parse(fs.readFileSync(process.argv[3], 'utf8'))));
  process.exit(0);
}

const dir = process.argv[2];
const runs = fs.readdirSync(dir).filter((f) => /^(herald|webpush)-[^.]*\.json$/.test(f))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
const kills = fs.readdirSync(dir).filter((f) => /^kill-\d+\.json$/.test(f)).sort()
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));

const groups = new Map();
for (const r of runs) groups.set(config(r), [...(groups.get(config(r)) ?? []), r]);
const order = (r) => [r.sender === 'herald' ? 0 : 1, r.vapid === 'reused' ? 1 : 0, r.rs[0].concurrency ?? 0];
const rows = [...groups.entries()].map(([name, rs]) => ({
  name,
  rs,
  sender: rs[0].sender,
  vapid: rs[0].vapidMode,
  rate: median(rs.map((r) => r.perSecond)),
})).sort((a, b) => {
  const [x, y] = [order(a), order(b)];
  return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
});

const out = [];
if (rows.length) {
  const n = rows[0].rs[0].n;
  out.push(`Throughput: ${fmt(n)} pushes each, medians of ${Math.max(...rows.map((r) => r.rs.length))} runs`, '');
  out.push('| sender | pushes/s (median) | runs | lost / duplicated / bad | sender CPU | sink CPU | redis CPU | cores busy (0 / 1) | payload → body |');
  out.push('| --- | ---: | --- | --- | ---: | ---: | ---: | --- | --- |');
  for (const row of rows) {
    const { rs } = row;
    const who = row.sender === 'herald' ? 'herald' : 'sender';
    out.push(`| ${row.name} | **${fmt(row.rate)}** | ${rs.map((r) => fmt(r.perSecond)).join(' / ')} | ` +
      `${rs.reduce((a, r) => a + r.lost, 0)} / ${rs.reduce((a, r) => a + r.sink.duplicates, 0)} / ` +
      `${rs.reduce((a, r) => a + r.sink.bad + r.sink.verifyFailed, 0)} | ` +
      `${median(rs.map((r) => pct(r, who))).toFixed(1)} % | ${median(rs.map((r) => pct(r, 'sink'))).toFixed(1)} % | ` +
      `${median(rs.map((r) => pct(r, 'redis'))).toFixed(1)} % | ` +
      `${rs[0].coreBusy.map((_, i) => `${median(rs.map((r) => r.coreBusy[i])).toFixed(0)} %`).join(' / ')} | ` +
      `${rs[0].sink.plaintextBytes} → ${rs[0].sink.bodyBytes} B |`);
  }
  const herald = rows.find((r) => r.sender === 'herald');
  if (herald) {
    out.push('');
    for (const mode of [...new Set(rows.filter((r) => r.sender !== 'herald').map((r) => r.vapid))]) {
      const best = rows.filter((r) => r.vapid === mode).sort((a, b) => b.rate - a.rate)[0];
      out.push(`Herald / web-push (vapid ${mode}, best concurrency ${best.rs[0].concurrency}): ` +
        `${fmt(herald.rate)} / ${fmt(best.rate)} = **${(herald.rate / best.rate).toFixed(2)}×**`);
    }
  }
}
if (kills.length) {
  out.push('', 'Worker kill: two nodes on one Redis, one SIGKILLed mid-way', '');
  out.push('| run | killed after (sink pushes) | notifications at their device | lost | sent twice | last push after | survivor CPU |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  kills.forEach((k, i) => {
    out.push(`| ${i + 1} | ${k.killed ? fmt(k.killed.sinkRequests) : 'not killed'} | ${fmt(k.sink.distinct)} / ${fmt(k.n)} | ` +
      `${k.lost} | ${k.sink.duplicates} | ${k.seconds.toFixed(2)} s | ${pct(k, 'herald')} % |`);
  });
}
// Anything lost, refused or failing verification fails the run.
const failed = [...runs, ...kills].filter((r) => r.lost || r.sink.bad || r.sink.verifyFailed);
if (failed.length) {
  out.push('', `FAILED: ${failed.length} run(s) lost pushes or sent bad ones (see their JSON lines)`);
  process.exitCode = 1;
}
console.log(out.join('\n'));
