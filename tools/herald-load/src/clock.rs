//! One time base for send stamps and receipt stamps.
//!
//! Publisher and receiver are this same process, so latency is measured on
//! the monotonic clock; it is offset to Unix time only so that `sent_us`
//! reads as a real timestamp in the notification's `data`.

use std::{
    sync::OnceLock,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

struct Clock {
    base: Instant,
    base_unix_us: u64,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// Microseconds since the Unix epoch, advancing monotonically.
pub fn now_us() -> u64 {
    let clock = CLOCK.get_or_init(|| Clock {
        base: Instant::now(),
        base_unix_us: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
    });
    clock.base_unix_us + clock.base.elapsed().as_micros() as u64
}
