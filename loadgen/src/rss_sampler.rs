//! Samples the server's resident memory every 100 ms in the background, so
//! the report has its peak and not only a few snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proc_stats;

const INTERVAL: Duration = Duration::from_millis(100);

pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (peak, count) = (peak_kib.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                // A server that exited has nothing more to sample.
                let Ok(memory) = proc_stats::memory(pid) else {
                    break;
                };
                peak.fetch_max(memory.rss_kib, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        RssSampler {
            peak_kib,
            samples,
            stop,
            task,
        }
    }

    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the peak and how many samples were taken.
    pub async fn stop(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        (
            self.peak_kib.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}
