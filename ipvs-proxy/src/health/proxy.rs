//! Health as kube-proxy reports it on `/healthz` and `/livez`.
//!
//! The proxy is healthy unless a change has been waiting to be programmed for longer than
//! the health timeout (twice the sync period, as kube-proxy): a stuck sync loop fails the
//! check, a quiet cluster does not. `/healthz` is also unhealthy while this node's Node object
//! is being deleted, so cloud load balancers stop sending traffic to it; `/livez` ignores
//! that (the process itself is fine and must not be restarted for it).
//!
//! `/healthz` also fails until the node has been adopted: every source's first full list
//! (all of a manifests folder, or the API server's lists) programmed. A readiness probe, or a
//! load balancer, must not send traffic to a node whose table is still empty or half-built
//! (a manifests folder that never finishes loading, an API server that never answers).
//! `/livez` does not wait for it: a large table's first load takes a while, and restarting
//! the process would only start it over.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The shared health state: the engine records, the HTTP handlers read.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    timeout: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<SystemTime>,
    node_deleting: bool,
    /// The first full input has been programmed (the node adopted).
    adopted: bool,
}

/// One answer of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether to answer 200 (else 503).
    pub healthy: bool,
    /// The JSON body, with kube-proxy's fields.
    pub body: String,
}

impl Health {
    /// Health with the given timeout.
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            timeout,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the state (plain
        // timestamps) is still meaningful.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A change arrived that is not programmed yet.
    pub fn queued(&self, now: SystemTime) {
        self.with(|s| {
            s.oldest_queued.get_or_insert(now);
        });
    }

    /// Everything queued so far is programmed.
    pub fn updated(&self, now: SystemTime) {
        self.with(|s| {
            s.last_updated = Some(now);
            s.oldest_queued = None;
        });
    }

    /// The node is adopted: every source's first full list is programmed. Until then
    /// `/healthz` fails.
    pub fn adopted(&self) {
        self.with(|s| s.adopted = true);
    }

    /// Whether this node's Node object is being deleted.
    pub fn set_node_deleting(&self, deleting: bool) {
        self.with(|s| s.node_deleting = deleting);
    }

    /// The `/healthz` answer.
    pub fn healthz(&self, now: SystemTime) -> Verdict {
        self.verdict(now, true)
    }

    /// The `/livez` answer.
    pub fn livez(&self, now: SystemTime) -> Verdict {
        self.verdict(now, false)
    }

    fn verdict(&self, now: SystemTime, node_matters: bool) -> Verdict {
        let state = self.with(|s| *s);
        let stuck = state
            .oldest_queued
            .is_some_and(|q| now.duration_since(q).unwrap_or_default() > self.timeout);
        let eligible = !(node_matters && state.node_deleting);
        let ready = state.adopted || !node_matters;
        let stamp = |t: Option<SystemTime>| {
            t.map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_default()
        };
        let mut body = serde_json::json!({
            "lastUpdated": stamp(state.last_updated),
            "currentTime": stamp(Some(now)),
        });
        if node_matters {
            body["nodeEligible"] = serde_json::Value::Bool(eligible);
        }
        Verdict {
            healthy: !stuck && eligible && ready,
            body: body.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_changes_fail_quiet_clusters_do_not() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = Health::new(Duration::from_secs(60));
        h.adopted();
        assert!(h.healthz(t0).healthy, "nothing queued yet");
        h.queued(t0);
        assert!(h.healthz(t0 + Duration::from_secs(59)).healthy);
        h.queued(t0 + Duration::from_secs(30)); // the oldest counts
        assert!(!h.healthz(t0 + Duration::from_secs(61)).healthy);
        assert!(!h.livez(t0 + Duration::from_secs(61)).healthy);
        h.updated(t0 + Duration::from_secs(62));
        let v = h.healthz(t0 + Duration::from_secs(3600));
        assert!(v.healthy, "quiet for an hour is fine");
        assert!(
            v.body
                .contains("\"lastUpdated\":\"1970-01-12T13:47:42.000Z\""),
            "{}",
            v.body
        );
    }

    #[test]
    fn healthz_fails_until_the_node_is_adopted_livez_does_not() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = Health::new(Duration::from_secs(60));
        assert!(!h.healthz(t0).healthy, "nothing programmed yet");
        assert!(h.livez(t0).healthy);
        // A partial load programmed early is not the whole input.
        h.updated(t0);
        assert!(!h.healthz(t0 + Duration::from_secs(3600)).healthy);
        h.adopted();
        assert!(h.healthz(t0 + Duration::from_secs(3600)).healthy);
    }

    #[test]
    fn node_deletion_fails_healthz_only() {
        let t0 = SystemTime::UNIX_EPOCH;
        let h = Health::new(Duration::from_secs(60));
        h.set_node_deleting(true);
        let v = h.healthz(t0);
        assert!(!v.healthy);
        assert!(v.body.contains("\"nodeEligible\":false"), "{}", v.body);
        assert!(h.livez(t0).healthy);
    }
}
