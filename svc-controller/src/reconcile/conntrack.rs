//! Stale UDP flows deleted after the virtual servers they went to changed: what conntrack
//! still sends to an endpoint that is gone, or keeps untranslated from before a Service had
//! one (see [`crate::netfilter::conntrack`]).
//!
//! It runs after a round's IPVS operations, for the UDP virtual servers the round changed:
//! a flow deleted before its real server was would be made again by the client's next
//! datagram (so a virtual server whose operations failed has its flows deleted after its
//! retry). The first full pass does it for every UDP virtual server it examines (desired,
//! or ours and deleted), for what changed while no daemon ran. A failure is retried per virtual server.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use ipvs::model::Protocol;

use super::*;

impl<D: Dataplane> Round<'_, D> {
    /// Deletes the stale UDP flows to each UDP virtual server of `keys`: those whose reply
    /// source is not one of its real servers now (all of them for a virtual server no
    /// longer desired).
    pub(super) fn clear_stale_udp_flows<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k VirtualServerKey>,
    ) {
        if !self.config.netfilter {
            return;
        }
        for key in keys.into_iter().filter(|k| k.protocol == Protocol::Udp) {
            // Its own operations failed: the old real servers may still be in the kernel, and
            // a flow deleted now would be made again toward them. Its flows wait for it.
            if self.retries.is_pending(&Work::Vs(*key)) {
                self.retry_later(Work::UdpFlows(*key));
                continue;
            }
            let keep: BTreeSet<IpAddr> = self
                .desired
                .virtual_servers()
                .get(key)
                .map(|vs| vs.real_servers.iter().map(|rs| rs.addr).collect())
                .unwrap_or_default();
            let frontend = SocketAddr::new(key.addr, key.port);
            match self.dataplane.delete_stale_udp_flows(frontend, &keep) {
                Ok(deleted) => {
                    self.retries.clear(Work::UdpFlows(*key));
                    if deleted > 0 {
                        self.metrics.udp_flows_deleted += deleted as u64;
                        self.report.udp_flows_deleted += deleted;
                        debug!(%key, deleted, "stale UDP flows deleted");
                    }
                }
                Err(e) => {
                    self.metrics.udp_flow_failures += 1;
                    self.retry_later(Work::UdpFlows(*key));
                    warn!(
                        %key,
                        error = %e,
                        retry_in_ms = self.retries.retry_in_ms(Work::UdpFlows(*key), self.now),
                        "cannot delete stale UDP flows; retrying"
                    );
                    self.report.errors.push(e.into());
                }
            }
        }
    }
}
