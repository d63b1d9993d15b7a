//! One server's memory over a run: the idle reading, the sampled peak
//! across its processes (a restart replaces the process, a killed replica
//! has none at the end), and the reading after every stream disconnected.

use crate::proc_stats::{self, Memory};
use crate::report::ServerFigures;
use crate::rss_sampler::RssSampler;

pub struct MemoryWatch {
    idle: Memory,
    sampler: Option<RssSampler>,
    /// Peak and samples of the processes no longer sampled.
    peak_kib: u64,
    samples: u64,
}

impl MemoryWatch {
    /// Starts sampling `pid`, whose idle memory is `idle`.
    pub fn start(pid: u32, idle: Memory) -> MemoryWatch {
        MemoryWatch {
            idle,
            sampler: Some(RssSampler::start(pid)),
            peak_kib: 0,
            samples: 0,
        }
    }

    /// Stops sampling, keeping the peak: before the process goes.
    pub async fn pause(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            let (peak, samples) = sampler.stop().await;
            self.peak_kib = self.peak_kib.max(peak);
            self.samples += samples;
        }
    }

    /// Samples `pid` from now on (a restarted process).
    pub fn resume(&mut self, pid: u32) {
        if self.sampler.is_none() {
            self.sampler = Some(RssSampler::start(pid));
        }
    }

    /// The figures once every stream disconnected: `pid` is read again
    /// (zeros if it is gone).
    pub async fn finish(mut self, pid: u32) -> ServerFigures {
        let after = proc_stats::memory(pid).unwrap_or_default();
        self.pause().await;
        tracing::info!(pid, samples = self.samples, "memory sampled");
        ServerFigures::new(
            pid,
            self.idle.rss_kib,
            self.peak_kib.max(after.rss_kib),
            after.rss_kib,
            after.hwm_kib,
        )
    }
}
