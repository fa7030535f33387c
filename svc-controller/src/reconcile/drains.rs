//! Graceful termination: which TCP real servers drain (quiesced at weight 0), until when,
//! when their connection counts are read again, and how their ends are counted and logged.

use std::time::Duration;

use super::timed::{At, Timed};
use super::*;

/// A draining real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// When it is deleted even with connections left; `None`: never (it goes when its last
    /// connection does).
    pub deadline: Option<Instant>,
    /// When its connection counts are read next.
    pub next_check: Instant,
}

pub(super) type DrainKey = (VirtualServerKey, IpAddr, u16);

/// A drain decision of one plan, settled once the plan was sent.
#[derive(Debug, Clone, Copy)]
pub(super) enum DrainNote {
    /// The real server is being quiesced.
    Started,
    /// Its connections reached zero: it is being deleted.
    Completed,
    /// The deadline passed: it is being deleted (with these counts, when read).
    Expired(Option<Connections>),
}

/// `t`, or `limit` when that comes first.
fn at_most(t: Instant, limit: Option<Instant>) -> Instant {
    limit.map_or(t, |limit| t.min(limit))
}

impl At for Drain {
    fn at(&self) -> Instant {
        self.next_check
    }
}

/// The draining real servers, with their deadlines, indexed by the time of their next check.
#[derive(Debug, Default)]
pub(super) struct Drains(Timed<DrainKey, Drain>);

impl Drains {
    /// The earliest drain check.
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.0.first()
    }

    /// Every drain, in key order.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = (&DrainKey, &Drain)> + '_ {
        self.0.entries().iter()
    }

    fn get(&self, key: &DrainKey) -> Option<Drain> {
        self.0.get(key).copied()
    }

    /// Records (or updates) a drain and its next check.
    fn set(&mut self, key: DrainKey, drain: Drain) {
        self.0.insert(key, drain);
    }

    /// Forgets a drain (its real server is gone, or it is wanted again).
    pub(super) fn clear(&mut self, key: DrainKey) {
        self.0.remove(&key);
    }

    /// Forgets every drain.
    pub(super) fn clear_all(&mut self) {
        self.0.clear();
    }

    /// The virtual servers with a drain check due at `now`. Each due check is pushed back an
    /// interval first, so that a check that cannot read the kernel waits for the next
    /// interval instead of being due again at once.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        interval: Duration,
    ) -> BTreeSet<VirtualServerKey> {
        let due: Vec<DrainKey> = self.0.due(now).collect();
        let mut keys = BTreeSet::new();
        for dkey in due {
            if let Some(d) = self.get(&dkey) {
                let next = at_most(now + interval, d.deadline);
                let next_check = if next > now { next } else { now + interval };
                self.set(dkey, Drain { next_check, ..d });
                keys.insert(dkey.0);
            }
        }
        keys
    }

    /// Whether planning `key` needs fresh connection counts: a TCP real server of `have` (the
    /// view) leaves the desired set, or a draining one is due for a check.
    pub(super) fn needs_counts(
        &self,
        key: &VirtualServerKey,
        desired: Option<&VirtualServer>,
        have: Option<&ServiceConfig>,
        now: Instant,
    ) -> bool {
        if key.protocol != Protocol::Tcp {
            return false;
        }
        let (Some(vs), Some(have)) = (desired, have) else {
            return false;
        };
        have.destinations().any(|d| {
            !desires(vs, d)
                && self
                    .get(&(*key, d.addr, d.port))
                    .is_none_or(|r| r.next_check <= now)
        })
    }

    /// What the kernel should hold for `key`: the desired virtual server plus the TCP real
    /// servers of `have` still draining (quiesced), or nothing. Starts, extends and ends
    /// drains by the connection counts just read (`counts`), and returns each decision with
    /// the target, to be settled once the plan was sent ([`Round::settle_drains`]).
    pub(super) fn target(
        &mut self,
        key: VirtualServerKey,
        desired: Option<&VirtualServer>,
        have: Option<&ServiceConfig>,
        counts: Option<&ServiceState>,
        now: Instant,
        config: &ReconcilerConfig,
    ) -> (Option<ServiceConfig>, Vec<(DestinationKey, DrainNote)>) {
        let mut notes = Vec::new();
        let Some(vs) = desired else {
            return (None, notes);
        };
        let mut want = service_config(vs);
        let Some(have) = have else {
            return (Some(want), notes);
        };
        for d in have.destinations() {
            if want.contains_destination(&d.key()) || key.protocol != Protocol::Tcp {
                continue;
            }
            let dkey = (key, d.addr, d.port);
            let conns = counts.map(|s| s.connections(&d.key()));
            let record = self.get(&dkey);
            let keep = match (record, conns) {
                (_, Some(c)) if c.is_idle() => {
                    if record.is_some() {
                        notes.push((d.key(), DrainNote::Completed));
                    }
                    false
                }
                (Some(r), _) if r.deadline.is_some_and(|deadline| now >= deadline) => {
                    notes.push((d.key(), DrainNote::Expired(conns)));
                    false
                }
                (Some(r), Some(_)) => {
                    let next = at_most(now + config.drain_check_interval, r.deadline);
                    self.set(
                        dkey,
                        Drain {
                            next_check: next,
                            ..r
                        },
                    );
                    true
                }
                (Some(_), None) => true,
                (None, _) if config.drain_timeout.is_some_and(|t| t.is_zero()) => false,
                (None, _) => {
                    // A timeout too large for the clock is no deadline.
                    let deadline = config
                        .drain_timeout
                        .and_then(|timeout| now.checked_add(timeout));
                    let next_check = at_most(now + config.drain_check_interval, deadline);
                    self.set(
                        dkey,
                        Drain {
                            deadline,
                            next_check,
                        },
                    );
                    notes.push((d.key(), DrainNote::Started));
                    true
                }
            };
            if keep {
                want.insert_destination(Destination {
                    weight: Weight::QUIESCED,
                    ..*d
                });
            }
        }
        (Some(want), notes)
    }

    /// Drops the drains of `key` that no longer describe a quiesced, undesired real server of
    /// `have` (the view after a plan was sent): deleted, or desired again.
    pub(super) fn forget_finished(
        &mut self,
        key: VirtualServerKey,
        have: Option<&ServiceConfig>,
        desired: Option<&VirtualServer>,
    ) {
        let lo = (key, IpAddr::from([0u8; 4]), 0u16);
        let finished: Vec<DrainKey> = self
            .0
            .entries()
            .range(lo..)
            .take_while(|((k, _, _), _)| *k == key)
            .map(|(k, _)| *k)
            .filter(|(_, addr, port)| {
                let dk = DestinationKey {
                    addr: *addr,
                    port: *port,
                };
                let still = have.is_some_and(|h| h.contains_destination(&dk))
                    && desired.is_some_and(|vs| {
                        !vs.real_servers
                            .iter()
                            .any(|r| r.addr == *addr && r.port == *port)
                    });
                !still
            })
            .collect();
        for dkey in finished {
            self.clear(dkey);
        }
    }
}

impl<D: Dataplane> Round<'_, D> {
    /// Counts and logs the drain decisions of one plan by what the view shows after it was
    /// sent: a drain has started once the real server is quiesced, and ended once it is
    /// deleted. A drain whose quiescing failed is forgotten, and decided again by the retry.
    pub(super) fn settle_drains(
        &mut self,
        key: VirtualServerKey,
        notes: &[(DestinationKey, DrainNote)],
    ) {
        let skey = to_service_key(&key);
        for (d, note) in notes {
            let in_view = self.view.table.destination(&skey, d);
            let real_server = SocketAddr::new(d.addr, d.port);
            match note {
                DrainNote::Started => {
                    if in_view.is_some_and(|x| x.weight == Weight::QUIESCED) {
                        self.metrics.drains_started += 1;
                        info!(
                            virtual_server = %key,
                            service = %self.owner(&key),
                            real_server = %real_server,
                            timeout_secs = self.config.drain_timeout.map(|t| t.as_secs()),
                            "drain started: real server quiesced (weight 0)"
                        );
                    } else {
                        self.drains.clear((key, d.addr, d.port));
                    }
                }
                DrainNote::Completed if in_view.is_none() => {
                    self.metrics.drains_completed += 1;
                    info!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        real_server = %real_server,
                        "drain completed: no connection left, real server deleted"
                    );
                }
                DrainNote::Expired(c) if in_view.is_none() => {
                    self.metrics.drains_expired += 1;
                    info!(
                        virtual_server = %key,
                        service = %self.owner(&key),
                        real_server = %real_server,
                        active = c.map(|c| c.active),
                        inactive = c.map(|c| c.inactive),
                        "drain expired: real server deleted at the deadline"
                    );
                }
                DrainNote::Completed | DrainNote::Expired(_) => {}
            }
        }
    }
}
