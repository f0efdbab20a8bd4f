//! What a run prints: human-readable lines, then one JSON line (the last line
//! of stdout, for scripts); and `summarize`, the medians of repeated runs.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    ServerKind, Via,
    ledger::Outages,
    ledger::{Percentiles, Second, Tally},
    procstat::MachineCpu,
};

/// Memory and CPU figures of one process (`None` where not sampled).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    /// Before any stream opened.
    pub rss_idle_kib: Option<u64>,
    /// With every stream open, after the settle pause.
    pub rss_open_kib: Option<u64>,
    /// When publishing ended.
    pub rss_end_kib: Option<u64>,
    /// While the streams opened.
    pub cpu_ramp_pct: Option<f64>,
    /// With the streams open and idle (`--idle`).
    pub cpu_idle_pct: Option<f64>,
    /// While publishing.
    pub cpu_publish_pct: Option<f64>,
    /// CPU seconds from the first publish until every delivery arrived (or
    /// the grace period ran out): what delivering the run's publishes cost.
    pub cpu_delivering_s: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Measures {
    pub streams_requested: u64,
    pub streams_opened: u64,
    pub streams_failed: u64,
    pub streams_per_user: u64,
    pub users: u64,
    pub ramp_rate: u32,
    pub ramp_elapsed: Duration,
    pub rate: u32,
    pub duration: Duration,
    pub publish_target: u64,
    pub publish_scheduled: u64,
    pub publish_acked: u64,
    pub publish_failed: u64,
    pub publish_elapsed: Duration,
    pub lanes: usize,
    pub lanes_abandoned: usize,
    pub grace: Duration,
    pub grace_used: Duration,
    pub tally: Tally,
    /// From the actual send.
    pub latency: Percentiles,
    /// From the scheduled send (see `Latencies::from_schedule`).
    pub latency_from_schedule: Percentiles,
    /// Per notification, from its scheduled send until the last stream of
    /// its user had it: in a broadcast, the time to the last follower.
    pub to_last_stream: Percentiles,
    pub timeline: Vec<Second>,
}

pub struct Summary {
    pub label: String,
    pub server_kind: ServerKind,
    pub via: Via,
    pub target: SocketAddr,
    /// Broadcast: the topic every stream followed.
    pub topic: Option<String>,
    pub measures: Measures,
    pub server: Option<ProcessFigures>,
    pub redis: Option<ProcessFigures>,
    pub load: ProcessFigures,
    /// CPU of the whole machine while publishing.
    pub machine_cpu: MachineCpu,
    /// Stream failures, early stream ends, publish failures: reason → count.
    pub failures: (BTreeMap<String, u64>, BTreeMap<String, u64>, BTreeMap<String, u64>),
    /// With `--reconnect`: how streams went down and came back.
    pub outages: Option<Outages>,
}

/// Reconnection figures: counts, time down per resume, and the span from
/// the first disconnect to the last resume.
fn outages_json(o: &Outages) -> Value {
    let mut down = o.down_us.clone();
    down.sort_unstable();
    let at = |q: f64| {
        down.get(((q * down.len() as f64).ceil() as usize).saturating_sub(1)).map(|&us| round(us as f64 / 1000.0, 1))
    };
    json!({
        "disconnects": o.disconnects,
        "resumes": o.resumes,
        "still_down": o.still_down,
        "without_cursor": o.without_cursor,
        "lost_without_cursor": o.lost_without_cursor,
        "down_ms": { "p50": at(0.5), "p99": at(0.99), "max": down.last().map(|&us| round(us as f64 / 1000.0, 1)) },
        "span_ms": match (o.first_down_us, o.last_resume_us) {
            (Some(first), Some(last)) => Some(round(last.saturating_sub(first) as f64 / 1000.0, 1)),
            _ => None,
        },
    })
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn pct(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.0}%"))
}

impl Summary {
    /// Memory the server took per open stream, in bytes, right after the
    /// streams opened (plus `--settle`).
    pub fn rss_per_stream_bytes(&self) -> Option<f64> {
        self.server_growth_per_stream(self.server?.rss_open_kib?)
    }

    /// The same at the end of the run: after `--idle` and the publish
    /// phase, so it includes what publishing left (small with the `redis`
    /// engine and a short, slow publish, as in the suite's P1). With
    /// `--idle` longer than the allocator's decay (jemalloc: 10 s), the
    /// pages it still held from the opening requests' freed memory are
    /// gone by then, so this is the steadier figure of what a stream keeps.
    pub fn rss_per_stream_end_bytes(&self) -> Option<f64> {
        self.server_growth_per_stream(self.server?.rss_end_kib?)
    }

    fn server_growth_per_stream(&self, rss_kib: u64) -> Option<f64> {
        let grown = rss_kib as f64 - self.server?.rss_idle_kib? as f64;
        (self.measures.streams_opened > 0).then(|| grown * 1024.0 / self.measures.streams_opened as f64)
    }

    /// The `--fail-on-loss` verdict: everything sent arrived once, in order,
    /// and nothing failed on the way.
    pub fn passed(&self) -> bool {
        let m = &self.measures;
        let t = &m.tally;
        m.streams_failed == 0
            && m.publish_failed == 0
            && m.publish_acked > 0
            && t.lost == 0
            && t.duplicated == 0
            && t.out_of_order == 0
            && t.misrouted == 0
            && t.unexpected == 0
    }

    /// Process CPU while publishing that neither Herald, Redis (when their
    /// pids were given) nor this tool used: other work skewing the run.
    pub fn other_cpu_pct(&self) -> f64 {
        let known: f64 =
            [self.server, self.redis, Some(self.load)].iter().flatten().filter_map(|p| p.cpu_publish_pct).sum();
        (self.machine_cpu.tasks_pct - known).max(0.0)
    }

    /// Deliveries a second: every distinct expected notification a stream
    /// received, over the time from the first publish to the last receipt
    /// (the publish phase plus the grace period it used).
    fn deliveries_per_second(&self) -> f64 {
        let m = &self.measures;
        let seconds = (m.publish_elapsed + m.grace_used).as_secs_f64();
        if seconds > 0.0 { m.tally.delivered as f64 / seconds } else { 0.0 }
    }

    /// A process's CPU per delivered notification, in microseconds.
    fn cpu_us_per_delivery(&self, process: Option<ProcessFigures>) -> Option<f64> {
        let delivered = self.measures.tally.delivered;
        (delivered > 0).then_some(())?;
        Some(process?.cpu_delivering_s? * 1e6 / delivered as f64)
    }

    fn achieved_rate(&self) -> f64 {
        let seconds = self.measures.publish_elapsed.as_secs_f64();
        if seconds > 0.0 { self.measures.publish_acked as f64 / seconds } else { 0.0 }
    }

    pub fn print(&self) {
        let m = &self.measures;
        let t = &m.tally;
        let l = &m.latency;
        let topic = self.topic.as_ref().map(|t| format!(", broadcast on topic {t}")).unwrap_or_default();
        println!(
            "run {:?}: {} via {} at {}{topic}",
            self.label,
            self.server_kind.as_str(),
            self.via.as_str(),
            self.target
        );
        println!(
            "streams:   {} opened, {} failed of {} ({} users × {}), ramp {:.2} s at {}/s; {} ended early",
            m.streams_opened,
            m.streams_failed,
            m.streams_requested,
            m.users,
            m.streams_per_user,
            m.ramp_elapsed.as_secs_f64(),
            m.ramp_rate,
            t.streams_closed_early
        );
        println!(
            "publish:   {} acked, {} failed, {} scheduled of {} in {:.2} s ({:.0}/s achieved, {}/s asked, {} lanes)",
            m.publish_acked,
            m.publish_failed,
            m.publish_scheduled,
            m.publish_target,
            m.publish_elapsed.as_secs_f64(),
            self.achieved_rate(),
            m.rate,
            m.lanes
        );
        println!(
            "delivery:  {} of {} expected; lost {} ({} on streams ended early), duplicated {}, out of order {}, unexpected {}, misrouted {}, foreign {}; grace used {:.2} s",
            t.delivered,
            t.expected,
            t.lost,
            t.lost_on_closed_streams,
            t.duplicated,
            t.out_of_order,
            t.unexpected,
            t.misrouted,
            t.foreign,
            m.grace_used.as_secs_f64()
        );
        println!(
            "latency:   publish → receipt p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} receipts)",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count
        );
        let s = &m.latency_from_schedule;
        println!(
            "           from the scheduled send: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.p999),
            ms(s.max)
        );
        let d = &m.to_last_stream;
        println!(
            "spread:    scheduled publish → its last stream p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} notifications); {:.0} deliveries/s",
            ms(d.p50),
            ms(d.p99),
            ms(d.max),
            d.count,
            self.deliveries_per_second()
        );
        println!(
            "timeline:  worst latency per second of publishing (ms): {}",
            m.timeline.iter().map(|s| format!("{:.1}", ms(s.max_us))).collect::<Vec<_>>().join(" ")
        );
        if let Some(s) = self.server {
            println!(
                "server:    RSS {} idle, {} with streams open, {} at the end; {} per stream; CPU {} while opening, {} idle, {} while publishing",
                mib(s.rss_idle_kib),
                mib(s.rss_open_kib),
                mib(s.rss_end_kib),
                self.rss_per_stream_bytes().map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                pct(s.cpu_ramp_pct),
                s.cpu_idle_pct.map_or("-".into(), |v| format!("{v:.2}%")),
                pct(s.cpu_publish_pct)
            );
        }
        if let Some(r) = self.redis {
            println!(
                "redis:     RSS {} at the end; CPU {} while publishing",
                mib(r.rss_end_kib),
                pct(r.cpu_publish_pct)
            );
        }
        println!(
            "load tool: RSS {} with streams open; CPU {} while publishing",
            mib(self.load.rss_open_kib),
            pct(self.load.cpu_publish_pct)
        );
        let per_delivery = |p| self.cpu_us_per_delivery(p).map_or("-".into(), |us| format!("{us:.2} µs"));
        println!(
            "per delivery: CPU of the server {}, of the load tool {}",
            per_delivery(self.server),
            per_delivery(Some(self.load))
        );
        if let Some(o) = self.outages.as_ref() {
            let j = outages_json(o);
            println!(
                "reconnect: {} disconnects ({} without a cursor, {} lost on those), {} resumes, {} still down; time down p50 {} ms, p99 {} ms, max {} ms; first down → last resume {} ms",
                o.disconnects,
                o.without_cursor,
                o.lost_without_cursor,
                o.resumes,
                o.still_down,
                j["down_ms"]["p50"],
                j["down_ms"]["p99"],
                j["down_ms"]["max"],
                j["span_ms"]
            );
        }
        println!(
            "machine:   CPU while publishing: {:.0}% in processes ({:.0}% in other processes), {:.0}% in interrupts (loopback TCP)",
            self.machine_cpu.tasks_pct,
            self.other_cpu_pct(),
            self.machine_cpu.interrupts_pct
        );
        let (failed, closed, publish) = &self.failures;
        for (what, reasons) in
            [("streams failed", failed), ("streams ended early", closed), ("publishes failed", publish)]
        {
            if !reasons.is_empty() {
                println!("{what}: {reasons:?}");
            }
        }
        println!("verdict:   {}", if self.passed() { "pass" } else { "FAIL" });
        println!("{}", self.json());
    }

    pub fn json(&self) -> Value {
        let m = &self.measures;
        let t = &m.tally;
        let percentiles = |l: &Percentiles| {
            json!({
                "receipts": l.count,
                "p50": ms(l.p50),
                "p90": ms(l.p90),
                "p99": ms(l.p99),
                "p999": ms(l.p999),
                "max": ms(l.max),
                "mean": round(l.mean / 1000.0, 3),
            })
        };
        let process = |p: Option<ProcessFigures>| {
            p.map(|p| {
                json!({
                    "rss_idle_kib": p.rss_idle_kib,
                    "rss_open_kib": p.rss_open_kib,
                    "rss_end_kib": p.rss_end_kib,
                    "cpu_ramp_pct": p.cpu_ramp_pct.map(|v| round(v, 1)),
                    "cpu_idle_pct": p.cpu_idle_pct.map(|v| round(v, 2)),
                    "cpu_publish_pct": p.cpu_publish_pct.map(|v| round(v, 1)),
                    "cpu_delivering_s": p.cpu_delivering_s.map(|v| round(v, 2)),
                    "cpu_us_per_delivery": self.cpu_us_per_delivery(Some(p)).map(|v| round(v, 3)),
                })
            })
        };
        let mut server = process(self.server);
        if let (Some(Value::Object(s)), Some(b)) = (&mut server, self.rss_per_stream_bytes()) {
            s.insert("rss_per_stream_bytes".into(), json!(b.round()));
        }
        if let (Some(Value::Object(s)), Some(b)) = (&mut server, self.rss_per_stream_end_bytes()) {
            s.insert("rss_per_stream_end_bytes".into(), json!(b.round()));
        }
        let (failed, closed, publish) = &self.failures;
        json!({
            "tool": "herald-load",
            "label": self.label,
            "server": self.server_kind.as_str(),
            "via": self.via.as_str(),
            "target": self.target.to_string(),
            "topic": self.topic,
            "passed": self.passed(),
            "streams": {
                "requested": m.streams_requested,
                "opened": m.streams_opened,
                "failed": m.streams_failed,
                "closed_early": t.streams_closed_early,
                "users": m.users,
                "per_user": m.streams_per_user,
                "ramp_rate": m.ramp_rate,
                "ramp_s": round(m.ramp_elapsed.as_secs_f64(), 3),
            },
            "publish": {
                "rate": m.rate,
                "duration_s": m.duration.as_secs_f64(),
                "target": m.publish_target,
                "scheduled": m.publish_scheduled,
                "acked": m.publish_acked,
                "failed": m.publish_failed,
                "elapsed_s": round(m.publish_elapsed.as_secs_f64(), 3),
                "achieved_rate": round(self.achieved_rate(), 1),
                "lanes": m.lanes,
                "lanes_abandoned": m.lanes_abandoned,
            },
            "delivery": {
                "expected": t.expected,
                "delivered": t.delivered,
                "lost": t.lost,
                "lost_on_closed_streams": t.lost_on_closed_streams,
                "duplicated": t.duplicated,
                "out_of_order": t.out_of_order,
                "unexpected": t.unexpected,
                "misrouted": t.misrouted,
                "foreign": t.foreign,
                "grace_s": m.grace.as_secs_f64(),
                "grace_used_s": round(m.grace_used.as_secs_f64(), 3),
                "per_second": round(self.deliveries_per_second(), 0),
            },
            "latency_ms": percentiles(&m.latency),
            "latency_from_schedule_ms": percentiles(&m.latency_from_schedule),
            "to_last_stream_ms": percentiles(&m.to_last_stream),
            "timeline": {
                "receipts": m.timeline.iter().map(|s| s.receipts).collect::<Vec<_>>(),
                "max_ms": m.timeline.iter().map(|s| ms(s.max_us)).collect::<Vec<_>>(),
            },
            "server": server,
            "redis": process(self.redis),
            "load": process(Some(self.load)),
            "machine": {
                "tasks_cpu_publish_pct": round(self.machine_cpu.tasks_pct, 1),
                "other_cpu_publish_pct": round(self.other_cpu_pct(), 1),
                "interrupts_cpu_publish_pct": round(self.machine_cpu.interrupts_pct, 1),
            },
            "failures": {
                "streams": failed,
                "closes": closed,
                "publish": publish,
            },
            "reconnect": self.outages.as_ref().map(outages_json),
        })
    }
}

/// The figures `summarize` reports: (JSON path, title).
const SUMMARY_ROWS: &[(&str, &str)] = &[
    ("streams.opened", "streams opened"),
    ("streams.failed", "streams failed"),
    ("streams.ramp_s", "ramp time (s)"),
    ("publish.acked", "publishes acked"),
    ("publish.failed", "publishes failed"),
    ("publish.achieved_rate", "achieved rate (/s)"),
    ("delivery.delivered", "delivered"),
    ("delivery.lost", "lost"),
    ("delivery.duplicated", "duplicated"),
    ("delivery.out_of_order", "out of order"),
    ("latency_ms.p50", "latency p50 (ms)"),
    ("latency_ms.p90", "latency p90 (ms)"),
    ("latency_ms.p99", "latency p99 (ms)"),
    ("latency_ms.p999", "latency p99.9 (ms)"),
    ("latency_ms.max", "latency max (ms)"),
    ("latency_from_schedule_ms.p50", "from schedule: p50 (ms)"),
    ("latency_from_schedule_ms.p99", "from schedule: p99 (ms)"),
    ("latency_from_schedule_ms.p999", "from schedule: p99.9 (ms)"),
    ("latency_from_schedule_ms.max", "from schedule: max (ms)"),
    ("to_last_stream_ms.p50", "to the last stream: p50 (ms)"),
    ("to_last_stream_ms.p99", "to the last stream: p99 (ms)"),
    ("delivery.per_second", "deliveries per second"),
    ("server.cpu_us_per_delivery", "server CPU per delivery (µs)"),
    ("load.cpu_us_per_delivery", "herald-load CPU per delivery (µs)"),
    ("server.rss_idle_kib", "server RSS idle (KiB)"),
    ("server.rss_open_kib", "server RSS, streams open (KiB)"),
    ("server.rss_per_stream_bytes", "server RSS per stream (B)"),
    ("server.rss_per_stream_end_bytes", "server RSS per stream at the end (B)"),
    ("server.cpu_ramp_pct", "server CPU opening (%)"),
    ("server.cpu_publish_pct", "server CPU publishing (%)"),
    ("redis.cpu_publish_pct", "redis CPU publishing (%)"),
    ("load.cpu_publish_pct", "herald-load CPU publishing (%)"),
    ("load.rss_open_kib", "herald-load RSS, streams open (KiB)"),
    ("machine.interrupts_cpu_publish_pct", "interrupt CPU publishing (%)"),
    ("machine.other_cpu_publish_pct", "other processes' CPU publishing (%)"),
];

/// Groups runs by label (a trailing `-<run number>` dropped) and prints a
/// Markdown table per group: the median, then each run's figure.
pub fn summarize(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Ok(run) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if run["tool"] != "herald-load" {
                continue;
            }
            let label = run["label"].as_str().unwrap_or("run");
            groups.entry(group_of(label).to_owned()).or_default().push(run);
        }
    }
    anyhow::ensure!(!groups.is_empty(), "no herald-load summary lines found");
    for (group, runs) in &groups {
        let passed = runs.iter().filter(|r| r["passed"] == true).count();
        println!("### {group}: {} runs, {passed} passed\n", runs.len());
        println!("| figure | median | per run |");
        println!("| --- | ---: | --- |");
        for (path, title) in SUMMARY_ROWS {
            let values: Vec<Option<f64>> = runs.iter().map(|r| lookup(r, path)).collect();
            let known: Vec<f64> = values.iter().flatten().copied().collect();
            if known.is_empty() {
                continue;
            }
            let per_run = values.iter().map(|v| v.map_or("-".into(), format_number)).collect::<Vec<_>>().join(", ");
            println!("| {title} | {} | {per_run} |", format_number(median(known)));
        }
        println!();
    }
    Ok(())
}

/// `http-2` → `http`; a label without a run number is its own group.
fn group_of(label: &str) -> &str {
    match label.rsplit_once('-') {
        Some((group, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => group,
        _ => label,
    }
}

fn lookup(run: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(run, |v, key| v.get(key))?.as_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_drop_the_run_number() {
        assert_eq!(group_of("http-2"), "http");
        assert_eq!(group_of("redis-fcall-10"), "redis-fcall");
        assert_eq!(group_of("smoke"), "smoke");
        assert_eq!(group_of("a-b"), "a-b");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let run = json!({"latency_ms": {"p99": 1.5}});
        assert_eq!(lookup(&run, "latency_ms.p99"), Some(1.5));
        assert_eq!(lookup(&run, "latency_ms.p50"), None);
    }
}
