//! Jittered exponential back-off between failed Consul requests.

use std::time::Duration;

/// Back-off settings. Production uses the defaults (0.5 s doubling to 5 s: a local agent is cheap to ask, and a long cap delays recovery after an outage);
/// tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

/// Per-loop back-off state: the delay doubles with each consecutive failure
/// and is reset by a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(nominal_delay(self.config, self.failures), fastrand::f64());
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

/// `initial * 2^failures`, capped at `max`.
pub fn nominal_delay(config: BackoffConfig, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    config
        .initial
        .checked_mul(factor)
        .unwrap_or(config.max)
        .min(config.max)
}

/// "Equal jitter": a delay drawn uniformly from `[nominal/2, nominal]`, so
/// that many loops failing together (Consul restarting) do not retry in
/// lock-step, while the delay still grows. `unit` is a random number in
/// `[0, 1)`.
pub fn jittered(nominal: Duration, unit: f64) -> Duration {
    let half = nominal / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BackoffConfig = BackoffConfig {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    #[test]
    fn nominal_delay_doubles_then_caps() {
        let delays: Vec<u64> = (0..9)
            .map(|n| nominal_delay(CONFIG, n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // No overflow however long Consul stays away.
        assert_eq!(nominal_delay(CONFIG, u32::MAX), CONFIG.max);
        assert_eq!(nominal_delay(CONFIG, 40), CONFIG.max);
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let nominal = Duration::from_secs(8);
        assert_eq!(jittered(nominal, 0.0), Duration::from_secs(4));
        assert_eq!(jittered(nominal, 0.5), Duration::from_secs(6));
        assert!(jittered(nominal, 0.999_999) <= nominal);
        // Out-of-range randomness cannot leave the bounds.
        assert_eq!(jittered(nominal, 7.0), nominal);
        assert_eq!(jittered(nominal, -1.0), Duration::from_secs(4));
    }

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let mut backoff = Backoff::new(CONFIG);
        for failures in 0..12 {
            let nominal = nominal_delay(CONFIG, failures);
            let delay = backoff.next_delay();
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "failure {failures}: {delay:?} outside [{:?}, {nominal:?}]",
                nominal / 2
            );
            assert!(delay <= CONFIG.max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= CONFIG.initial);
    }
}
