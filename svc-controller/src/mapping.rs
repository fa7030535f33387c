//! The mapping between the desired state and the library's IPVS types, in both directions.
//!
//! The desired state already speaks the library's vocabulary ([`Protocol`], [`Scheduler`],
//! [`Persistence`](ipvs::model::Persistence) are `ipvs::model`'s); what is mapped here is its
//! shape: a [`VirtualServerKey`] is an address-based [`ServiceKey`] restricted to the
//! protocols a Service can use, a [`VirtualServer`] becomes a [`Service`] plus
//! [`Destination`]s, a [`RealServer`] a masquerading destination.

use ipvs::model::{Destination, Forwarding, Protocol, Service, ServiceKey, Weight};
use ipvs::table::{ServiceConfig, Table};

use crate::desired::DesiredState;
use crate::model::{RealServer, VirtualServer, VirtualServerKey};

#[cfg(doc)]
use ipvs::model::Scheduler;

/// The IPVS key of a virtual server.
pub fn to_service_key(key: &VirtualServerKey) -> ServiceKey {
    ServiceKey::Tuple {
        protocol: key.protocol,
        addr: key.addr,
        port: key.port,
    }
}

/// The virtual-server key of an IPVS key, `None` for keys this controller never makes
/// (firewall marks, protocols other than TCP, UDP and SCTP).
pub fn from_service_key(key: &ServiceKey) -> Option<VirtualServerKey> {
    match *key {
        ServiceKey::Tuple {
            protocol,
            addr,
            port,
        } => match Protocol::from_number(protocol.number()) {
            protocol @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp) => Some(VirtualServerKey {
                addr,
                protocol,
                port,
            }),
            Protocol::Other(_) => None,
        },
        ServiceKey::Fwmark { .. } => None,
    }
}

/// The IPVS service for a desired virtual server.
pub fn ipvs_service(vs: &VirtualServer) -> Service {
    let mut service = Service::new(to_service_key(&vs.key), vs.scheduler.clone());
    service.persistence = vs.persistence;
    service
}

/// The IPVS destination for a desired real server: masquerading (pods are reached through
/// NAT), no thresholds.
pub fn ipvs_destination(rs: &RealServer) -> Destination {
    let mut d = Destination::new(rs.addr, rs.port, Forwarding::Masquerade);
    d.weight = Weight::new(rs.weight).unwrap_or(Weight::MAX);
    d
}

/// The IPVS service and destinations of a desired virtual server.
pub fn service_config(vs: &VirtualServer) -> ServiceConfig {
    ServiceConfig::new(ipvs_service(vs))
        .with_destinations(vs.real_servers.iter().map(ipvs_destination))
}

/// The table the desired state describes, for every virtual server (tests compare the
/// kernel's owned part against it).
pub fn desired_table(desired: &DesiredState) -> Table {
    desired
        .virtual_servers()
        .values()
        .map(service_config)
        .collect()
}

#[cfg(test)]
mod tests {
    use ipvs::model::{PersistenceNetmask, Scheduler};

    use super::*;
    use crate::model::{Exposure, ServiceRef};

    #[test]
    fn keys_round_trip() {
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let k = VirtualServerKey {
                addr: "fd00::1".parse().unwrap(),
                protocol,
                port: 443,
            };
            assert_eq!(from_service_key(&to_service_key(&k)), Some(k));
        }
        let other = ServiceKey::Tuple {
            protocol: Protocol::Other(33),
            addr: "10.96.0.1".parse().unwrap(),
            port: 80,
        };
        assert_eq!(from_service_key(&other), None);
        let spelled_by_number = ServiceKey::Tuple {
            protocol: Protocol::Other(6),
            addr: "10.96.0.1".parse().unwrap(),
            port: 80,
        };
        assert_eq!(
            from_service_key(&spelled_by_number).map(|k| k.protocol),
            Some(Protocol::Tcp)
        );
    }

    #[test]
    fn a_virtual_server_maps_field_by_field() {
        let key = VirtualServerKey {
            addr: "10.96.0.10".parse().unwrap(),
            protocol: Protocol::Udp,
            port: 53,
        };
        let persistence = ipvs::model::Persistence {
            timeout_secs: 60,
            netmask: PersistenceNetmask::host(key.family()),
        };
        let vs = VirtualServer {
            key,
            scheduler: Scheduler::SourceHashing {
                fallback: false,
                port: false,
            },
            persistence: Some(persistence),
            real_servers: vec![RealServer {
                addr: "10.244.1.5".parse().unwrap(),
                port: 5353,
                weight: 3,
                local: false,
            }],
            service: ServiceRef::new("kube-system", "dns"),
            port_name: "dns".into(),
            exposure: Exposure::ClusterIp,
            bind_address: true,
            local_policy: false,
            source_ranges: None,
        };
        let config = service_config(&vs);
        assert_eq!(config.key(), ServiceKey::udp(key.addr, 53));
        assert_eq!(config.service().scheduler.name(), "sh");
        assert_eq!(config.service().persistence, Some(persistence));
        let destinations: Vec<_> = config.destinations().collect();
        assert_eq!(destinations.len(), 1);
        assert_eq!(destinations[0].forwarding, Forwarding::Masquerade);
        assert_eq!(destinations[0].weight.get(), 3);
    }
}
