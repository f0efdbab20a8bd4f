//! Resident memory and CPU time of a process, from `/proc` (Linux only).

use std::time::Instant;

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel reports
/// them in USER_HZ, which is 100 on every Linux architecture Rust targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process, by pid (`self` for this one).
#[derive(Debug, Clone)]
pub struct Process {
    pub name: &'static str,
    dir: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rss_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    at: Instant,
}

impl Process {
    pub fn pid(name: &'static str, pid: u32) -> Self {
        Self { name, dir: format!("/proc/{pid}") }
    }

    pub fn current() -> Self {
        Self { name: "herald-load", dir: "/proc/self".into() }
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir))
            .with_context(|| format!("{}: cannot read {}/status", self.name, self.dir))?;
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))
            .with_context(|| format!("{}: cannot read {}/stat", self.name, self.dir))?;
        Ok(Sample {
            rss_kib: rss_kib(&status).with_context(|| format!("{}: no VmRSS in {}/status", self.name, self.dir))?,
            cpu_ticks: cpu_ticks(&stat).with_context(|| format!("{}: unreadable {}/stat", self.name, self.dir))?,
            at: Instant::now(),
        })
    }
}

impl Sample {
    /// CPU used between two samples, in percent of one core.
    /// CPU time the process used since `earlier`, in seconds.
    pub fn cpu_seconds_since(&self, earlier: &Sample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / TICKS_PER_SECOND
    }

    pub fn cpu_percent_since(&self, earlier: &Sample) -> f64 {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        let ticks = self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64;
        100.0 * ticks / TICKS_PER_SECOND / seconds
    }
}

fn rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// Fields 14 and 15 (utime, stime), counted after the `)` that ends the
/// command name, which may itself hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of the whole machine, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    ticks: MachineTicks,
    at: Instant,
}

/// Cumulative clock ticks of the whole machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// user + nice + system: time charged to processes.
    tasks: u64,
    /// irq + softirq + steal: not charged to any process. On loopback most
    /// of it is TCP receive processing for the processes under test.
    interrupts: u64,
}

/// Machine CPU between two samples, in percent of one core (up to 100 ×
/// cores).
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub tasks_pct: f64,
    pub interrupts_pct: f64,
}

impl MachineSample {
    pub fn take() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        Ok(Self { ticks: machine_ticks(&stat).context("no cpu line in /proc/stat")?, at: Instant::now() })
    }

    pub fn cpu_since(&self, earlier: &MachineSample) -> MachineCpu {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        if seconds <= 0.0 {
            return MachineCpu::default();
        }
        let pct = |now: u64, then: u64| 100.0 * now.saturating_sub(then) as f64 / TICKS_PER_SECOND / seconds;
        MachineCpu {
            tasks_pct: pct(self.ticks.tasks, earlier.ticks.tasks),
            interrupts_pct: pct(self.ticks.interrupts, earlier.ticks.interrupts),
        }
    }
}

/// Fields of the `cpu` line: user nice system idle iowait irq softirq steal.
fn machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    Some(MachineTicks { tasks: at(0) + at(1) + at(2), interrupts: at(5) + at(6) + at(7) })
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let soft = numbers.next()?.parse().ok()?;
    let hard = numbers.next()?.parse().ok()?;
    Some((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(rss_kib("Name:\tx\nVmRSS:\t  12345 kB\n"), Some(12345));
        let stat = "42 (we ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1";
        assert_eq!(cpu_ticks(stat), Some(10));
        let machine = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(machine_ticks(machine), Some(MachineTicks { tasks: 10 + 1 + 5, interrupts: 2 + 3 + 4 }));
    }

    #[test]
    fn reads_this_process() {
        let s = Process::current().sample().unwrap();
        assert!(s.rss_kib > 0);
        assert!(MachineSample::take().is_ok());
        assert!(open_files_limit().is_some());
    }
}
