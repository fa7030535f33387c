//! The mapping from the desired state to the library's IPVS types.

use super::*;

/// The IPVS service for a desired virtual server.
pub fn ipvs_service(vs: &VirtualServer) -> Service {
    let key: ServiceKey = to_service_key(&vs.key);
    let mut service = Service::new(key, ipvs_scheduler(vs.scheduler));
    service.persistence = vs.persistence.map(|p| IpvsPersistence {
        timeout_secs: p.timeout_seconds,
        netmask: PersistenceNetmask::host(key.family()),
    });
    service
}

/// The IPVS destination for a desired real server: masquerading (pods are reached through
/// NAT), no thresholds.
pub fn ipvs_destination(rs: &RealServer) -> Destination {
    let mut d = Destination::new(rs.addr, rs.port, Forwarding::Masquerade);
    d.weight = Weight::new(rs.weight).unwrap_or(Weight::MAX);
    d
}

/// The IPVS scheduler for a desired one (the `sh` and `mh` flags off).
pub fn ipvs_scheduler(s: Scheduler) -> IpvsScheduler {
    match s {
        Scheduler::Rr => IpvsScheduler::RoundRobin,
        Scheduler::Wrr => IpvsScheduler::WeightedRoundRobin,
        Scheduler::Lc => IpvsScheduler::LeastConnection,
        Scheduler::Wlc => IpvsScheduler::WeightedLeastConnection,
        Scheduler::Lblc => IpvsScheduler::LocalityBasedLeastConnection,
        Scheduler::Lblcr => IpvsScheduler::LocalityBasedLeastConnectionReplication,
        Scheduler::Dh => IpvsScheduler::DestinationHashing,
        Scheduler::Sh => IpvsScheduler::SourceHashing {
            fallback: false,
            port: false,
        },
        Scheduler::Sed => IpvsScheduler::ShortestExpectedDelay,
        Scheduler::Nq => IpvsScheduler::NeverQueue,
        Scheduler::Fo => IpvsScheduler::WeightedFailover,
        Scheduler::Ovf => IpvsScheduler::WeightedOverflow,
        Scheduler::Mh => IpvsScheduler::MaglevHashing {
            fallback: false,
            port: false,
        },
        Scheduler::Twos => IpvsScheduler::TwoChoice,
        Scheduler::None => IpvsScheduler::None,
    }
}

/// The table the desired state describes, for every virtual server (tests compare the
/// kernel's owned part against it).
pub fn desired_table(desired: &DesiredState) -> Table {
    desired
        .virtual_servers()
        .values()
        .map(|vs| {
            ServiceConfig::new(ipvs_service(vs))
                .with_destinations(vs.real_servers.iter().map(ipvs_destination))
        })
        .collect()
}
