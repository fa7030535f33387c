//! [`Table`]: the whole IPVS table as configuration.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use super::notation::{DestinationOptions, ServiceDesignation, ServiceOptions};
use crate::model::{
    AddressFamily, Destination, DestinationEntry, DestinationKey, Service, ServiceEntry, ServiceKey,
};

/// A change to a [`Table`] that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TableError {
    /// A destination was given for a service that is not in the table; add the service first.
    #[error("service {0} is not in the table")]
    UnknownService(ServiceKey),
}

/// A [`ServiceKey`] ordered for deterministic iteration: address-based services first (by
/// family, protocol number, address, port), then firewall-mark services (by family, mark).
///
/// The order agrees with `ServiceKey`'s equality (protocols compare by number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServiceOrd(pub(super) ServiceKey);

impl ServiceOrd {
    /// The sort key as plain integers (an address as its number: within one family, the
    /// order of its octets), which compare without branching on enums: tables look keys up
    /// for every operation they follow.
    fn rank(&self) -> (u8, u8, u16, u128, u16, u32) {
        match self.0 {
            ServiceKey::Tuple {
                protocol,
                addr,
                port,
            } => (
                0,
                AddressFamily::of(&addr) as u8,
                protocol.number(),
                address_number(addr),
                port,
                0,
            ),
            ServiceKey::Fwmark { family, mark } => (1, family as u8, 0, 0, 0, mark.get()),
        }
    }
}

/// An address as a number: within one family, numbers order as the addresses' octets do.
fn address_number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Ord for ServiceOrd {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for ServiceOrd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A [`DestinationKey`] ordered by address (IPv4 before IPv6), then port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DestinationOrd(pub(super) DestinationKey);

impl Ord for DestinationOrd {
    fn cmp(&self, other: &Self) -> Ordering {
        // IPv4 before IPv6, then the address as a number, then the port.
        let rank = |k: &DestinationKey| (k.addr.is_ipv6(), address_number(k.addr), k.port);
        rank(&self.0).cmp(&rank(&other.0))
    }
}

impl PartialOrd for DestinationOrd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One virtual service as configuration: its settings and its destinations, keyed by
/// [`DestinationKey`] and kept in a deterministic order (address, then port).
///
/// Build one with [`ServiceConfig::new`] and [`ServiceConfig::with_destination`]; the
/// destinations' keys are always their own `addr` and `port`, so a destination given twice
/// replaces the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    service: Service,
    destinations: BTreeMap<DestinationOrd, Destination>,
}

impl ServiceConfig {
    /// A service without destinations.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            destinations: BTreeMap::new(),
        }
    }

    /// A service as a listing reports it, with its destinations; read-only data (flags the
    /// kernel sets, statistics, connection counts, the reported address family) is dropped.
    pub fn from_entries(
        entry: ServiceEntry,
        destinations: impl IntoIterator<Item = DestinationEntry>,
    ) -> Self {
        Self::new(entry.service).with_destinations(destinations.into_iter().map(|d| d.destination))
    }

    /// Adds a destination (replacing one with the same address and port).
    #[must_use]
    pub fn with_destination(mut self, destination: Destination) -> Self {
        self.insert_destination(destination);
        self
    }

    /// Adds destinations (each replacing one with the same address and port).
    #[must_use]
    pub fn with_destinations(
        mut self,
        destinations: impl IntoIterator<Item = Destination>,
    ) -> Self {
        self.extend(destinations);
        self
    }

    /// The service's settings.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service's key.
    pub fn key(&self) -> ServiceKey {
        self.service.key
    }

    /// Its destinations, ordered by address then port.
    pub fn destinations(
        &self,
    ) -> impl DoubleEndedIterator<Item = &Destination> + ExactSizeIterator {
        self.destinations.values()
    }

    /// The keys of its destinations, in the same order.
    pub fn destination_keys(&self) -> impl DoubleEndedIterator<Item = DestinationKey> + '_ {
        self.destinations.keys().map(|k| k.0)
    }

    /// One destination.
    pub fn destination(&self, key: &DestinationKey) -> Option<&Destination> {
        self.destinations.get(&DestinationOrd(*key))
    }

    /// Whether it has a destination with this key.
    pub fn contains_destination(&self, key: &DestinationKey) -> bool {
        self.destinations.contains_key(&DestinationOrd(*key))
    }

    /// How many destinations it has.
    pub fn destination_count(&self) -> usize {
        self.destinations.len()
    }

    /// Adds or replaces a destination; returns the one replaced.
    pub fn insert_destination(&mut self, destination: Destination) -> Option<Destination> {
        self.destinations
            .insert(DestinationOrd(destination.key()), destination)
    }

    /// Removes a destination; returns it if it was there.
    pub fn remove_destination(&mut self, key: &DestinationKey) -> Option<Destination> {
        self.destinations.remove(&DestinationOrd(*key))
    }

    /// Keeps only the destinations for which `keep` returns `true`.
    pub fn retain_destinations(&mut self, mut keep: impl FnMut(&Destination) -> bool) {
        self.destinations.retain(|_, d| keep(d));
    }

    /// Replaces the settings, keeping the destinations. The key must stay the same, since
    /// the destinations belong to it (and a [`Table`] files the service under it).
    pub(super) fn set_settings(&mut self, service: Service) -> Service {
        std::mem::replace(&mut self.service, service)
    }

    /// The settings and the destinations (ordered by address, then port).
    pub fn into_parts(self) -> (Service, Vec<Destination>) {
        (self.service, self.destinations.into_values().collect())
    }
}

impl Extend<Destination> for ServiceConfig {
    fn extend<I: IntoIterator<Item = Destination>>(&mut self, iter: I) {
        for d in iter {
            self.insert_destination(d);
        }
    }
}

impl From<Service> for ServiceConfig {
    fn from(service: Service) -> Self {
        Self::new(service)
    }
}

impl fmt::Display for ServiceConfig {
    /// The service and its destinations in `ipvsadm-save` notation, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let designation = ServiceDesignation(&self.service.key);
        writeln!(f, "-A {designation}{}", ServiceOptions(&self.service))?;
        for d in self.destinations.values() {
            writeln!(f, "-a {designation}{}", DestinationOptions(d))?;
        }
        Ok(())
    }
}

/// The IPVS table as configuration: services keyed by [`ServiceKey`], each with its
/// settings and its destinations (see [`ServiceConfig`]).
///
/// Iteration is deterministic: address-based services first (by family, protocol, address
/// and port), then firewall-mark services (by family and mark); destinations by address,
/// then port. Two tables are equal when they hold the same services with the same settings
/// and the same destinations, whatever the order they were built or listed in.
///
/// ```
/// use std::net::Ipv4Addr;
/// use ipvs::model::{Destination, Forwarding, Scheduler, Service, ServiceKey};
/// use ipvs::table::Table;
///
/// let dns = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 53), 53);
/// let table = Table::new()
///     .with_service(Service::new(dns, Scheduler::RoundRobin))
///     .with_destination(&dns, Destination::new(Ipv4Addr::new(10, 1, 0, 1), 53, Forwarding::DirectRouting))?
///     .with_destination(&dns, Destination::new(Ipv4Addr::new(10, 1, 0, 2), 53, Forwarding::DirectRouting))?;
/// assert_eq!(table.len(), 1);
/// assert_eq!(table.destination_count(), 2);
/// assert_eq!(
///     table.to_string(),
///     "-A -u 10.0.0.53:53 -s rr\n\
///      -a -u 10.0.0.53:53 -r 10.1.0.1:53 -g -w 1\n\
///      -a -u 10.0.0.53:53 -r 10.1.0.2:53 -g -w 1\n"
/// );
/// # Ok::<(), ipvs::table::TableError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    services: BTreeMap<ServiceOrd, ServiceConfig>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table a listing describes: each service as `GET_SERVICE` reported it, with the
    /// destinations `GET_DEST` reported for it.
    ///
    /// Only configuration is kept (see [`ServiceConfig::from_entries`]). A dump is not a
    /// consistent snapshot, so a service may be reported twice: the last report wins.
    pub fn from_entries<I, D>(listing: I) -> Self
    where
        I: IntoIterator<Item = (ServiceEntry, D)>,
        D: IntoIterator<Item = DestinationEntry>,
    {
        listing
            .into_iter()
            .map(|(entry, dests)| ServiceConfig::from_entries(entry, dests))
            .collect()
    }

    /// Adds a service without destinations, or, if the table has one with the same key,
    /// replaces its settings and keeps its destinations.
    #[must_use]
    pub fn with_service(mut self, service: Service) -> Self {
        self.insert_service(service);
        self
    }

    /// Adds a service with its destinations, replacing any service with the same key.
    #[must_use]
    pub fn with_service_config(mut self, config: ServiceConfig) -> Self {
        self.insert(config);
        self
    }

    /// Adds a destination to a service of the table (replacing one with the same address
    /// and port).
    pub fn with_destination(
        mut self,
        service: &ServiceKey,
        destination: Destination,
    ) -> Result<Self, TableError> {
        self.insert_destination(service, destination)?;
        Ok(self)
    }

    /// Adds a service without destinations, or replaces the settings of the one with the
    /// same key (keeping its destinations); returns the settings replaced.
    pub fn insert_service(&mut self, service: Service) -> Option<Service> {
        match self.services.entry(ServiceOrd(service.key)) {
            btree_map::Entry::Occupied(mut e) => Some(e.get_mut().set_settings(service)),
            btree_map::Entry::Vacant(e) => {
                e.insert(ServiceConfig::new(service));
                None
            }
        }
    }

    /// Adds a service with its destinations; returns the one it replaced.
    pub fn insert(&mut self, config: ServiceConfig) -> Option<ServiceConfig> {
        self.services.insert(ServiceOrd(config.key()), config)
    }

    /// Adds or replaces a destination of a service of the table; returns the one replaced.
    pub fn insert_destination(
        &mut self,
        service: &ServiceKey,
        destination: Destination,
    ) -> Result<Option<Destination>, TableError> {
        self.services
            .get_mut(&ServiceOrd(*service))
            .map(|s| s.insert_destination(destination))
            .ok_or(TableError::UnknownService(*service))
    }

    /// Removes a service and its destinations; returns them if the service was there.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Option<ServiceConfig> {
        self.services.remove(&ServiceOrd(*key))
    }

    /// Removes a destination; returns it if it was there.
    pub fn remove_destination(
        &mut self,
        service: &ServiceKey,
        destination: &DestinationKey,
    ) -> Option<Destination> {
        self.services
            .get_mut(&ServiceOrd(*service))
            .and_then(|s| s.remove_destination(destination))
    }

    /// Removes every service.
    pub fn clear(&mut self) {
        self.services.clear();
    }

    /// How many services it has.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether it has no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// How many destinations its services have in all.
    pub fn destination_count(&self) -> usize {
        self.services
            .values()
            .map(ServiceConfig::destination_count)
            .sum()
    }

    /// A service and its destinations.
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceConfig> {
        self.services.get(&ServiceOrd(*key))
    }

    /// A service and its destinations, to change its destinations in place.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut ServiceConfig> {
        self.services.get_mut(&ServiceOrd(*key))
    }

    /// A service's settings.
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.get(key).map(ServiceConfig::service)
    }

    /// One destination of one service.
    pub fn destination(
        &self,
        service: &ServiceKey,
        destination: &DestinationKey,
    ) -> Option<&Destination> {
        self.get(service).and_then(|s| s.destination(destination))
    }

    /// Whether it has a service with this key.
    pub fn contains_service(&self, key: &ServiceKey) -> bool {
        self.services.contains_key(&ServiceOrd(*key))
    }

    /// The services with their destinations, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.services.values())
    }

    /// The services' settings, in order.
    pub fn services(&self) -> impl DoubleEndedIterator<Item = &Service> + ExactSizeIterator {
        self.services.values().map(ServiceConfig::service)
    }

    /// The services' keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = ServiceKey> + ExactSizeIterator + '_ {
        self.services.keys().map(|k| k.0)
    }

    /// Keeps only the services for which `keep` returns `true` (with all their
    /// destinations). A controller keeps the services it owns, on both sides of a
    /// [`diff`](super::diff), so that the plan never touches the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&ServiceConfig) -> bool) {
        self.services.retain(|_, s| keep(s));
    }

    /// A copy with only the services for which `keep` returns `true`.
    #[must_use]
    pub fn filtered(&self, mut keep: impl FnMut(&ServiceConfig) -> bool) -> Self {
        self.services
            .values()
            .filter(|s| keep(s))
            .cloned()
            .collect()
    }
}

impl FromIterator<ServiceConfig> for Table {
    /// A table of these services; a later one replaces an earlier one with the same key.
    fn from_iter<I: IntoIterator<Item = ServiceConfig>>(iter: I) -> Self {
        let mut table = Self::new();
        table.extend(iter);
        table
    }
}

impl FromIterator<Service> for Table {
    /// A table of these services, without destinations.
    fn from_iter<I: IntoIterator<Item = Service>>(iter: I) -> Self {
        iter.into_iter().map(ServiceConfig::new).collect()
    }
}

impl Extend<ServiceConfig> for Table {
    /// Adds services, each replacing one with the same key.
    fn extend<I: IntoIterator<Item = ServiceConfig>>(&mut self, iter: I) {
        for config in iter {
            self.insert(config);
        }
    }
}

impl IntoIterator for Table {
    type Item = ServiceConfig;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.services.into_values())
    }
}

impl<'a> IntoIterator for &'a Table {
    type Item = &'a ServiceConfig;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The services of a [`Table`] with their destinations, in order ([`Table::iter`]).
#[derive(Debug, Clone)]
pub struct Iter<'a>(btree_map::Values<'a, ServiceOrd, ServiceConfig>);

impl<'a> Iterator for Iter<'a> {
    type Item = &'a ServiceConfig;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// The services of a [`Table`] with their destinations, in order, by value.
#[derive(Debug)]
pub struct IntoIter(btree_map::IntoValues<ServiceOrd, ServiceConfig>);

impl Iterator for IntoIter {
    type Item = ServiceConfig;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for IntoIter {}

impl fmt::Display for Table {
    /// The table in `ipvsadm-save` notation (`-A` for a service, `-a` for each of its
    /// destinations), one line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.services.values().try_for_each(|s| s.fmt(f))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroU32;

    use super::*;
    use crate::model::{Forwarding, Protocol, Scheduler, ServiceFlags, Stats};

    #[test]
    fn keys_order_by_family_protocol_address_and_port_then_marks() {
        let v4 = |a: [u8; 4]| IpAddr::from(a);
        let v6 = |s: &str| IpAddr::from(s.parse::<Ipv6Addr>().unwrap());
        let tuple = |protocol, addr, port| ServiceKey::Tuple {
            protocol,
            addr,
            port,
        };
        let mark = |family, m| ServiceKey::Fwmark {
            family,
            mark: NonZeroU32::new(m).unwrap(),
        };
        // In the documented order.
        let ordered = [
            tuple(Protocol::Tcp, v4([9, 255, 255, 255]), 443),
            tuple(Protocol::Tcp, v4([10, 0, 0, 1]), 80),
            tuple(Protocol::Tcp, v4([10, 0, 0, 1]), 443),
            tuple(Protocol::Tcp, v4([10, 0, 1, 0]), 1),
            tuple(Protocol::Tcp, v4([128, 0, 0, 0]), 1),
            tuple(Protocol::Udp, v4([1, 0, 0, 0]), 53),
            tuple(Protocol::Tcp, v6("::1"), 80),
            tuple(Protocol::Tcp, v6("fd00::1"), 80),
            tuple(Protocol::Tcp, v6("fd00::1:0"), 80),
            tuple(Protocol::Sctp, v6("::"), 1),
            mark(AddressFamily::Ipv4, 7),
            mark(AddressFamily::Ipv4, 300),
            mark(AddressFamily::Ipv6, 1),
        ];
        let mut shuffled: Vec<ServiceOrd> = ordered.iter().rev().copied().map(ServiceOrd).collect();
        shuffled.swap(2, 9);
        shuffled.sort();
        assert_eq!(shuffled.iter().map(|o| o.0).collect::<Vec<_>>(), ordered);

        let dest = |addr, port| DestinationKey { addr, port };
        let dests = [
            dest(v4([10, 0, 0, 2]), 9),
            dest(v4([10, 0, 0, 2]), 80),
            dest(v4([10, 0, 0, 10]), 1),
            dest(v4([192, 168, 0, 1]), 1),
            dest(v6("::1"), 1),
            dest(v6("fd00::2"), 1),
        ];
        let mut sorted: Vec<DestinationOrd> =
            dests.iter().rev().copied().map(DestinationOrd).collect();
        sorted.sort();
        assert_eq!(sorted.iter().map(|o| o.0).collect::<Vec<_>>(), dests);
    }

    fn tcp(last: u8, port: u16) -> ServiceKey {
        ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, last), port)
    }

    fn dest(last: u8) -> Destination {
        Destination::new(Ipv4Addr::new(10, 1, 0, last), 80, Forwarding::Masquerade)
    }

    #[test]
    fn iteration_order_is_deterministic() {
        let fwmark = ServiceKey::Fwmark {
            family: AddressFamily::Ipv4,
            mark: NonZeroU32::MIN,
        };
        let v6 = ServiceKey::tcp(Ipv6Addr::LOCALHOST, 80);
        let udp = ServiceKey::udp(Ipv4Addr::new(10, 0, 0, 1), 53);
        let keys = [fwmark, v6, udp, tcp(2, 80), tcp(1, 443), tcp(1, 80)];
        let forward: Table = keys
            .iter()
            .map(|k| Service::new(*k, Scheduler::RoundRobin))
            .collect();
        let backward: Table = keys
            .iter()
            .rev()
            .map(|k| Service::new(*k, Scheduler::RoundRobin))
            .collect();
        assert_eq!(forward, backward);
        assert_eq!(
            forward.keys().collect::<Vec<_>>(),
            vec![tcp(1, 80), tcp(1, 443), tcp(2, 80), udp, v6, fwmark]
        );
    }

    #[test]
    fn protocol_other_with_a_known_number_is_the_same_key() {
        let other = ServiceKey::Tuple {
            protocol: Protocol::Other(6),
            addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            port: 80,
        };
        let table = Table::new().with_service(Service::new(tcp(1, 80), Scheduler::RoundRobin));
        assert!(table.contains_service(&other));
    }

    #[test]
    fn builders_and_lookups() {
        let k = tcp(1, 80);
        let table = Table::new()
            .with_service(Service::new(k, Scheduler::RoundRobin))
            .with_destination(&k, dest(2))
            .and_then(|t| t.with_destination(&k, dest(1)))
            .expect("service exists");
        assert_eq!(table.len(), 1);
        assert_eq!(table.destination_count(), 2);
        assert_eq!(table.destination(&k, &dest(1).key()), Some(&dest(1)));
        let order: Vec<_> = table
            .get(&k)
            .map(|s| s.destinations().copied().collect())
            .unwrap_or_default();
        assert_eq!(order, vec![dest(1), dest(2)]);

        // Replacing the settings keeps the destinations.
        let table = table.with_service(Service::new(k, Scheduler::WeightedRoundRobin));
        assert_eq!(table.destination_count(), 2);
        assert_eq!(
            table.service(&k).map(|s| s.scheduler.clone()),
            Some(Scheduler::WeightedRoundRobin)
        );

        assert_eq!(
            Table::new().with_destination(&k, dest(1)),
            Err(TableError::UnknownService(k))
        );
    }

    #[test]
    fn from_entries_drops_read_only_data() {
        let k = tcp(1, 80);
        let service = Service::new(k, Scheduler::RoundRobin);
        let busy = Stats {
            connections: 42,
            ..Stats::default()
        };
        let entry = ServiceEntry {
            service: service.clone(),
            flags: ServiceFlags(ServiceFlags::HASHED),
            stats: busy,
        };
        let d = DestinationEntry {
            destination: dest(1),
            reported_family: None,
            active_connections: 3,
            inactive_connections: 4,
            persistent_connections: 5,
            stats: busy,
        };
        let listed = Table::from_entries([(entry, vec![d])]);
        let written =
            Table::new().with_service_config(ServiceConfig::new(service).with_destination(dest(1)));
        assert_eq!(listed, written);
    }

    #[test]
    fn retain_and_filtered() {
        let mut table: Table = (1..=4)
            .map(|i| Service::new(tcp(i, 80), Scheduler::RoundRobin))
            .collect();
        let odd = |s: &ServiceConfig| matches!(s.key(), ServiceKey::Tuple { addr, .. } if addr.to_string().ends_with(['1', '3']));
        let filtered = table.filtered(odd);
        table.retain(odd);
        assert_eq!(table, filtered);
        assert_eq!(
            table.keys().collect::<Vec<_>>(),
            vec![tcp(1, 80), tcp(3, 80)]
        );
    }

    #[test]
    fn remove_and_mutate() {
        let k = tcp(1, 80);
        let mut table = Table::new().with_service_config(
            ServiceConfig::new(Service::new(k, Scheduler::RoundRobin))
                .with_destinations([dest(1), dest(2)]),
        );
        assert_eq!(table.remove_destination(&k, &dest(1).key()), Some(dest(1)));
        assert_eq!(table.remove_destination(&k, &dest(1).key()), None);
        if let Some(s) = table.get_mut(&k) {
            s.retain_destinations(|_| false);
        }
        assert_eq!(table.destination_count(), 0);
        assert!(table.remove_service(&k).is_some());
        assert!(table.is_empty());
    }
}
