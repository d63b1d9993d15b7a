//! Whether pilotfish serves proxies. Not before every source has delivered
//! its first good load: a replica that just started must never hand a
//! proxy a partial or empty mesh (Envoy would drop the clusters it has).
//! Until then `/ready` fails naming what is awaited and ADS streams are
//! refused with UNAVAILABLE, as Istio's istiod does before its caches sync;
//! Envoy retries. Once ready it stays so, since every source keeps its
//! last good state when it fails later, until shutdown.

use std::sync::RwLock;

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// What is still awaited, one line each, naming the source and cause.
    Waiting(Vec<String>),
    Ready,
    Stopping,
}

#[derive(Debug)]
pub struct Readiness {
    state: RwLock<State>,
}

impl Readiness {
    /// Nothing to wait for: a server fed by hand (tests, embedding).
    pub fn ready() -> Self {
        Readiness {
            state: RwLock::new(State::Ready),
        }
    }

    /// Waiting for `pending` (one line per source).
    pub fn waiting(pending: Vec<String>) -> Self {
        Readiness {
            state: RwLock::new(State::Waiting(pending)),
        }
    }

    /// Records what is still awaited after a load; ready once nothing is.
    /// No effect once ready or stopping.
    pub fn update(&self, pending: Vec<String>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let State::Waiting(before) = &*state else {
            return;
        };
        if pending.is_empty() {
            tracing::info!("every registry and config source loaded; ready");
            *state = State::Ready;
        } else if *before != pending {
            // Normal for a moment at start (a registry's first answer);
            // the sources themselves warn about what is broken.
            tracing::info!(
                waiting_for = ?pending,
                "not ready: ADS streams are refused until every source has loaded"
            );
            *state = State::Waiting(pending);
        }
    }

    /// Shutting down: unready for good.
    pub fn stop(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::Stopping;
    }

    pub fn is_ready(&self) -> bool {
        self.unready_reason().is_none()
    }

    /// Why pilotfish is not ready, on one line naming every awaited source
    /// and its cause, or `None` when it is.
    pub fn unready_reason(&self) -> Option<String> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            State::Ready => None,
            State::Stopping => Some("shutting down".into()),
            State::Waiting(pending) => Some(format!("waiting for {}", pending.join("; "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_nothing_is_pending_and_then_until_stopped() {
        let readiness = Readiness::waiting(vec!["registry file a.yaml: not read yet".into()]);
        assert!(
            readiness
                .unready_reason()
                .is_some_and(|r| r.contains("a.yaml"))
        );
        readiness.update(vec!["registry consul: no first snapshot yet".into()]);
        let reason = readiness.unready_reason().unwrap_or_default();
        assert!(
            reason.contains("consul") && !reason.contains("a.yaml"),
            "{reason}"
        );
        readiness.update(Vec::new());
        assert!(readiness.is_ready());
        readiness.update(vec!["later failure".into()]);
        assert!(
            readiness.is_ready(),
            "a source failing later keeps its last good state"
        );
        readiness.stop();
        assert_eq!(readiness.unready_reason().as_deref(), Some("shutting down"));
    }
}
