//! Herald's fuzz targets, one binary each under `src/bin/`, run by AFL++
//! (`scripts/fuzz.sh`). What each checks is in [`checks`]: the main
//! crate's `tests/it/fuzz_regressions.rs` replays every saved crash through
//! the same functions, so a crash found once stays a failing test until it
//! is fixed.

mod checks;

pub use checks::{cursor, publish, sse};
