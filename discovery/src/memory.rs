//! Giving freed memory back to the operating system. glibc's allocator keeps
//! the pages of freed chunks inside its per-thread arenas, so after 2,000
//! proxies disconnect the server's resident size stayed at its peak although
//! the live heap was back to its idle size (measured in docs/benchmarks.md).
//! A trim after departures returns those pages; it walks the arenas off the
//! async workers, at most once per period, and only when something left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Streams closed and generations replaced since the last trim.
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// How often a trim may run.
const TRIM_PERIOD: Duration = Duration::from_secs(2);

/// Notes that a large amount of memory was probably freed (a stream ended).
pub fn note_release() {
    RELEASES.fetch_add(1, Ordering::Relaxed);
}

/// Trims every period in which something was released, until shutdown.
pub async fn trim_after_releases(shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TRIM_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if RELEASES.swap(0, Ordering::Relaxed) > 0 {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and madvises the allocator's own free
    // lists; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl) return memory on their own or not at all.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
