//! How long a Kubernetes watch waits after a failure before it asks the API server again.
//!
//! Two goals pull against each other: a node must follow an API server that has come back
//! within seconds (its IPVS table is frozen at the last good state meanwhile), and a fleet of
//! nodes must not hammer a server that is down or struggling. The answer here is a short
//! capped exponential backoff ([`WATCH_BACKOFF`]): a few quick retries for a blip, then one
//! request every few seconds per watch, jittered so that nodes which lost the server at the
//! same instant drift apart instead of retrying in step.
//!
//! A 410 Gone (the watch's resource version is older than the server's history) is different
//! from a failure: the server answered, so it is up, and only a relist gets past it. The first
//! 410 of a streak therefore relists at once; a server that keeps answering 410 is retried with
//! the same backoff as any failure, so that a list and watch per watch every few seconds is
//! the most it sees.

use std::time::{Duration, Instant};

/// The timing of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The delay after the first failure of a streak.
    pub initial: Duration,
    /// Each further failure of the streak multiplies the delay by this much...
    pub factor: u32,
    /// ...up to this much.
    pub max: Duration,
    /// A watch that has gone this long without failing is healthy again: its next failure
    /// starts a new streak at [`BackoffPolicy::initial`].
    pub reset_after: Duration,
}

/// The Kubernetes watches' retry timing.
///
/// - `initial` 0.5 s: a dropped connection or a load balancer failing over is usually over at
///   once; a first retry within half a second hides it.
/// - `factor` 2 up to `max` 4 s: 0.5, 1, 2, 4, 4, ... s. The cap bounds how long a node keeps
///   a stale table after the API server is back: at most one delay of `max` (plus the request).
///   At the cap a node sends each of its three watches' requests once per 2 to 4 s, about one
///   request per second per node, which a server that is down or coming up can refuse cheaply
///   (and the delay never grows to the tens of seconds that would leave Services stale long
///   after it recovered).
/// - Each delay is drawn uniformly from the upper half of its step (`[d/2, d]`), so nodes that
///   failed together spread out over the next retries while the cap stays a hard bound.
/// - `reset_after` 30 s: several times the cap, so that a server that is down (failures every
///   few seconds) keeps the streak at the cap, while a watch that ran for a while starts its
///   next streak with quick retries.
pub const WATCH_BACKOFF: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(500),
    factor: 2,
    max: Duration::from_secs(4),
    reset_after: Duration::from_secs(30),
};

/// The failures so far, for one watch.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    rng: fastrand::Rng,
    /// The un-jittered delay of the latest failure and when it was (`None`: no streak).
    last: Option<(Duration, Instant)>,
    /// When the latest 410 was answered.
    last_expired: Option<Instant>,
}

impl Backoff {
    /// A backoff with `policy`, jittered from a randomly seeded generator.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// A backoff with `policy`, jittered from `rng` (a seeded one gives repeatable delays).
    pub fn with_rng(policy: BackoffPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy,
            rng,
            last: None,
            last_expired: None,
        }
    }

    /// How long to wait before retrying after a failure at `now`.
    pub fn after_failure(&mut self, now: Instant) -> Duration {
        let step = match self.last {
            Some((step, at)) if now.saturating_duration_since(at) < self.policy.reset_after => {
                step.saturating_mul(self.policy.factor).min(self.policy.max)
            }
            _ => self.policy.initial.min(self.policy.max),
        };
        self.last = Some((step, now));
        // Uniform in [step/2, step].
        step / 2 + step.mul_f64(self.rng.f64() / 2.0)
    }

    /// How long to wait before relisting after a 410 Gone at `now`: nothing for the first of
    /// a streak, as after any failure for one that repeats within
    /// [`BackoffPolicy::reset_after`].
    pub fn after_expired(&mut self, now: Instant) -> Duration {
        let repeated = self
            .last_expired
            .is_some_and(|at| now.saturating_duration_since(at) < self.policy.reset_after);
        self.last_expired = Some(now);
        if repeated {
            self.after_failure(now)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::with_rng(WATCH_BACKOFF, fastrand::Rng::with_seed(seed))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Asserts that `delay` is in the jitter band of a step of `step` seconds.
    fn assert_step(delay: Duration, step: f64) {
        assert!(
            delay >= secs(step / 2.0) && delay <= secs(step),
            "{delay:?} is not in [{}, {step}] s",
            step / 2.0
        );
    }

    #[test]
    fn delays_double_from_half_a_second_and_stay_at_the_cap() {
        for seed in 0..50 {
            let mut b = backoff(seed);
            let mut now = Instant::now();
            for step in [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0] {
                let delay = b.after_failure(now);
                assert_step(delay, step);
                now += delay;
            }
        }
    }

    #[test]
    fn a_long_outage_stays_at_the_cap_and_a_healthy_spell_starts_over() {
        let mut b = backoff(7);
        let mut now = Instant::now();
        // Ten minutes of failures: the delay never exceeds the cap.
        let end = now + Duration::from_secs(600);
        while now < end {
            let delay = b.after_failure(now);
            assert!(delay <= WATCH_BACKOFF.max, "{delay:?}");
            now += delay;
        }
        assert_step(b.after_failure(now), 4.0);
        // Just under the reset period without a failure: still a streak.
        now += WATCH_BACKOFF.reset_after - Duration::from_millis(1);
        assert_step(b.after_failure(now), 4.0);
        // A full reset period without a failure: a new streak.
        now += WATCH_BACKOFF.reset_after;
        assert_step(b.after_failure(now), 0.5);
        now += Duration::from_secs(1);
        assert_step(b.after_failure(now), 1.0);
    }

    #[test]
    fn a_first_410_relists_at_once_and_a_repeated_one_backs_off() {
        let mut b = backoff(3);
        let mut now = Instant::now();
        // After an outage, at the cap: the server answering 410 means it is up.
        for _ in 0..6 {
            now += b.after_failure(now);
        }
        assert_eq!(b.after_expired(now), Duration::ZERO);
        // The server keeps answering 410: relists are spaced like failures, growing to the cap.
        let mut streak = backoff(3);
        let start = Instant::now();
        assert_eq!(streak.after_expired(start), Duration::ZERO);
        let mut now = start;
        for step in [0.5, 1.0, 2.0, 4.0, 4.0] {
            now += Duration::from_millis(10); // the relist and the watch
            let delay = streak.after_expired(now);
            assert_step(delay, step);
            now += delay;
        }
        // A 410 long after the last one is a new streak again.
        now += WATCH_BACKOFF.reset_after;
        assert_eq!(streak.after_expired(now), Duration::ZERO);
    }

    #[test]
    fn nodes_that_fail_together_drift_apart() {
        // Two nodes whose watches fail at the same instant: after a few retries their request
        // times differ (the cap is reached either way).
        let start = Instant::now();
        let times = |seed| {
            let mut b = backoff(seed);
            let mut now = start;
            for _ in 0..5 {
                now += b.after_failure(now);
            }
            now
        };
        let (a, b) = (times(1), times(2));
        let apart = if a > b { a - b } else { b - a };
        assert!(apart > Duration::from_millis(100), "{apart:?} apart");
    }
}
