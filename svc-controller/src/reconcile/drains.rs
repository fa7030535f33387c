//! Graceful termination: which TCP real servers drain (quiesced at weight 0), until when,
//! and how their ends are counted and logged.

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
pub(super) fn at_most(t: Instant, limit: Option<Instant>) -> Instant {
    limit.map_or(t, |limit| t.min(limit))
}

impl<D: Dataplane> Reconciler<D> {
    /// Whether planning `key` needs fresh connection counts: a TCP real server leaves the
    /// desired set, or a draining one is due for a check.
    pub(super) fn needs_counts(
        &self,
        key: &VirtualServerKey,
        desired: Option<&VirtualServer>,
        now: Instant,
    ) -> bool {
        if key.protocol != Protocol::Tcp {
            return false;
        }
        let (Some(vs), Some(have)) = (desired, self.view.get(&to_service_key(key))) else {
            return false;
        };
        have.destinations().any(|d| {
            !desires(vs, d)
                && self
                    .schedule
                    .drain(&(*key, d.addr, d.port))
                    .is_none_or(|r| r.next_check <= now)
        })
    }

    /// What the kernel should hold for `key`: the desired virtual server plus the TCP real
    /// servers still draining (quiesced), or nothing.
    pub(super) fn target(
        &mut self,
        key: VirtualServerKey,
        desired: Option<&VirtualServer>,
        have: Option<&ServiceConfig>,
        counts: Option<&ServiceState>,
        now: Instant,
        notes: &mut Vec<(DestinationKey, DrainNote)>,
    ) -> Option<ServiceConfig> {
        let vs = desired?;
        let mut want = service_config(vs);
        let Some(have) = have else {
            return Some(want);
        };
        for d in have.destinations() {
            if want.contains_destination(&d.key()) || key.protocol != Protocol::Tcp {
                continue;
            }
            let dkey = (key, d.addr, d.port);
            let conns = counts.map(|s| s.connections(&d.key()));
            let record = self.schedule.drain(&dkey);
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
                    let next = at_most(now + self.config.drain_check_interval, r.deadline);
                    self.schedule.set_drain(
                        dkey,
                        Drain {
                            next_check: next,
                            ..r
                        },
                    );
                    true
                }
                (Some(_), None) => true,
                (None, _) if self.config.drain_timeout.is_some_and(|t| t.is_zero()) => false,
                (None, _) => {
                    // A timeout too large for the clock is no deadline.
                    let deadline = self
                        .config
                        .drain_timeout
                        .and_then(|timeout| now.checked_add(timeout));
                    let next_check = at_most(now + self.config.drain_check_interval, deadline);
                    self.schedule.set_drain(
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
        Some(want)
    }

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
            let in_view = self.view.destination(&skey, d);
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
                        self.schedule.clear_drain((key, d.addr, d.port));
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

    /// Drops drain records of `key` that no longer describe a quiesced, undesired real server
    /// in the view (deleted, or desired again).
    pub(super) fn forget_finished_drains(&mut self, key: VirtualServerKey) {
        let lo = (key, IpAddr::from([0u8; 4]), 0u16);
        let records: Vec<DrainKey> = self
            .schedule
            .drains()
            .range(lo..)
            .take_while(|((k, _, _), _)| *k == key)
            .map(|(k, _)| *k)
            .collect();
        let skey = to_service_key(&key);
        let desired = self.desired.virtual_servers().get(&key);
        let finished: Vec<DrainKey> = records
            .into_iter()
            .filter(|(_, addr, port)| {
                let dk = DestinationKey {
                    addr: *addr,
                    port: *port,
                };
                let still = self.view.destination(&skey, &dk).is_some()
                    && desired.is_some_and(|vs| {
                        !vs.real_servers
                            .iter()
                            .any(|r| r.addr == *addr && r.port == *port)
                    });
                !still
            })
            .collect();
        for dkey in finished {
            self.schedule.clear_drain(dkey);
        }
    }
}
