//! [`Ipvs`]: the blocking handle.

use std::path::PathBuf;

use super::call::{self, Read, ReadName, Segment};
use super::error::{Error, Result};
use crate::codec::{IpvsMessage, ListingMessage, Operation, Request};
use crate::model::{
    DaemonState, Destination, DestinationEntry, DestinationKey, Info, KernelFeatures, Service,
    ServiceEntry, ServiceKey, SyncDaemon, Timeouts,
};
use crate::table::Table;
use crate::transport::{Connection, Namespace, Options, TransportError};

/// Services below which a full listing is read on the handle's own socket only: a helper
/// thread costs more than a few dozen round trips.
const PARALLEL_LISTING_MIN: usize = 64;

/// The most sockets a full listing reads destinations on at once.
const LISTING_SOCKETS_MAX: usize = 4;

/// The receive slot of the socket that dumps services: the largest dump chunk the kernel
/// makes. It resumes a service dump by walking past every service already sent, once per
/// chunk, so chunks eight times larger than a page make a large service dump walk the
/// table far fewer times; a destination dump, which is small, is cheaper in page-sized
/// chunks, and is read on the other sockets.
pub(crate) const SERVICE_DUMP_SLOT: usize = 32 << 10;

/// A blocking handle on the IPVS table of one network namespace.
///
/// It owns one netlink socket, opened with the IPVS family resolved once, and every call has a
/// deadline ([`Options::timeout`]). Listings run on a few more sockets in the same namespace,
/// opened on first use and kept (see [`Self::services`] and [`Self::destinations`]). Calls
/// take `&mut self`: share a handle between threads behind a `Mutex`, or open one per thread
/// (sockets are cheap).
#[derive(Debug)]
pub struct Ipvs {
    connection: Connection<IpvsMessage>,
    features: KernelFeatures,
    /// How to open more sockets in the handle's namespace (for listings); `None` if the
    /// namespace could not be pinned (then listings use the handle's socket only).
    lister_options: Option<Options>,
    /// Sockets for destination dumps (one, or several for a parallel listing), opened on
    /// first use; their replies are decoded without attribute lists ([`ListingMessage`]).
    listers: Vec<Connection<ListingMessage>>,
    /// The socket for service dumps, with large receive slots ([`SERVICE_DUMP_SLOT`]),
    /// opened on first use.
    service_lister: Option<Connection<ListingMessage>>,
}

impl Ipvs {
    /// Opens a handle on the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        Self::with_options(Options::default())
    }

    /// Opens a handle on the network namespace at `path` (e.g. `/run/netns/lb` or
    /// `/proc/<pid>/ns/net`). The calling thread does not change namespace.
    pub fn in_namespace(path: impl Into<PathBuf>) -> Result<Self> {
        Self::with_options(Options {
            namespace: Namespace::Path(path.into()),
            ..Options::default()
        })
    }

    /// Opens a handle with explicit options (namespace, deadline, buffer sizes, batch limits).
    pub fn with_options(options: Options) -> Result<Self> {
        let lister_options = call::pinned_options(&options);
        let connection = Connection::open("IPVS", options)
            .map_err(|e| Error::transport("open the IPVS netlink socket", e))?;
        Ok(Self {
            connection,
            features: call::running_kernel_features(),
            lister_options,
            listers: Vec::new(),
            service_lister: None,
        })
    }

    /// What the running kernel is known to support (from its release, upgraded by what its
    /// replies contain). Operations that need more are refused before they are sent.
    pub fn features(&self) -> KernelFeatures {
        self.features
    }

    /// Overrides the feature set (for kernels that backport features, or to test refusals).
    pub fn set_features(&mut self, features: KernelFeatures) {
        self.features = features;
    }

    /// The underlying connection (deadline, counters).
    pub fn connection(&mut self) -> &mut Connection<IpvsMessage> {
        &mut self.connection
    }

    fn read<T>(&mut self, read: Read<T>) -> Result<T> {
        read_on(&mut self.connection, &mut self.features, read)
    }

    /// The IPVS version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        self.read(call::info())
    }

    /// The TCP, TCP FIN and UDP timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        self.read(call::timeouts())
    }

    /// Every service, with its settings, flags and statistics.
    ///
    /// Read on a socket of this handle kept for service dumps (opened on first use), in
    /// chunks as large as the kernel makes them; on the handle's own socket if it cannot be
    /// opened.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>> {
        if self.service_lister.is_none() {
            self.service_lister = self.open_lister(Some(SERVICE_DUMP_SLOT));
        }
        let timeout = self.connection.timeout();
        let Some(lister) = self.service_lister.as_mut() else {
            return self.read(call::services());
        };
        lister.set_timeout(timeout);
        let operation = ReadName::Fixed("list services");
        let replies = dump_on(lister, Request::DumpServices, operation)?;
        call::listed_services(replies, &mut self.features).map_err(|source| Error::Decode {
            operation: operation.into(),
            source,
        })
    }

    /// One service (`NotFound` if missing).
    pub fn service(&mut self, key: &ServiceKey) -> Result<ServiceEntry> {
        self.read(call::service(key))
    }

    /// The destinations of a service (empty if the service is missing: that is what the
    /// kernel answers).
    ///
    /// Read on a socket of this handle kept for destination dumps (opened on first use),
    /// whose replies are decoded without attribute lists; on the handle's own socket if it
    /// cannot be opened.
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        if self.listing_sockets(1) == 0 {
            return self.read(call::destinations(key));
        }
        let (mut lists, learned) = list_destinations(
            &mut self.listers[0],
            self.features,
            std::slice::from_ref(key),
        )?;
        self.features = self.features.with_all(learned);
        Ok(lists.pop().unwrap_or_default())
    }

    /// Several services by key, in order: `None` for a key the kernel has no service for.
    ///
    /// One `GET_SERVICE` request per key, sent together as a [batch](Self::apply_batch): a
    /// few system calls for thousands of keys, where [`service`](Self::service) costs a round
    /// trip each. A refusal other than "not found" fails the whole read.
    pub fn services_by_key(&mut self, keys: &[ServiceKey]) -> Result<Vec<Option<ServiceEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self
            .connection
            .batch(call::service_requests(keys))
            .map_err(|e| Error::transport("get services", e))?;
        call::services_by_key(keys, answers, &mut self.features)
    }

    /// The destinations of each of `keys`, in order (empty for a missing service, as the
    /// kernel answers).
    ///
    /// One `GET_DEST` dump per key. The kernel runs one dump at a time per socket, so for
    /// many keys the dumps are spread over a few extra sockets of this handle (opened in its
    /// namespace on first use and kept), each driven by a short-lived thread.
    pub fn destinations_of(&mut self, keys: &[ServiceKey]) -> Result<Vec<Vec<DestinationEntry>>> {
        let wanted = if keys.len() < PARALLEL_LISTING_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .clamp(1, LISTING_SOCKETS_MAX)
        };
        let sockets = self.listing_sockets(wanted);
        if sockets == 0 {
            return keys
                .iter()
                .map(|key| self.read(call::destinations(key)))
                .collect();
        }
        if sockets == 1 {
            let (lists, learned) = list_destinations(&mut self.listers[0], self.features, keys)?;
            self.features = self.features.with_all(learned);
            return Ok(lists);
        }
        // Contiguous shares, one per socket, so the answers keep the order of the keys.
        let share = keys.len().div_ceil(sockets);
        let features = self.features;
        let results: Vec<Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)>> =
            std::thread::scope(|scope| {
                let mut shares = keys.chunks(share);
                let mut connections = self.listers.iter_mut().take(sockets);
                let own = (shares.next(), connections.next());
                let handles: Vec<_> = shares
                    .zip(connections)
                    .map(|(share, connection)| {
                        scope.spawn(move || list_destinations(connection, features, share))
                    })
                    .collect();
                let mut results = Vec::with_capacity(handles.len() + 1);
                if let (Some(share), Some(connection)) = own {
                    results.push(list_destinations(connection, features, share));
                }
                results.extend(handles.into_iter().map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(Error::transport(
                            "list destinations",
                            TransportError::io(
                                "listing thread",
                                std::io::Error::other("the thread panicked"),
                            ),
                        ))
                    })
                }));
                results
            });
        let mut destinations = Vec::with_capacity(keys.len());
        for result in results {
            let (lists, learned) = result?;
            self.features = self.features.with_all(learned);
            destinations.extend(lists);
        }
        Ok(destinations)
    }

    /// The whole table: every service with its destinations, settings, flags and statistics,
    /// in the order the kernel lists services.
    ///
    /// One `GET_SERVICE` dump, then the destinations of every service as
    /// [`destinations_of`](Self::destinations_of) reads them (over a few sockets for a large
    /// table). Like every dump, this is not a consistent snapshot: a service deleted meanwhile
    /// is listed without destinations.
    pub fn services_with_destinations(
        &mut self,
    ) -> Result<Vec<(ServiceEntry, Vec<DestinationEntry>)>> {
        let services = self.services()?;
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.service.key).collect();
        let destinations = self.destinations_of(&keys)?;
        Ok(services.into_iter().zip(destinations).collect())
    }

    /// The whole table's configuration, as a [`Table`] (statistics, connection counts and
    /// kernel-set flags dropped; see [`Table::from_entries`]). Read as
    /// [`services_with_destinations`](Self::services_with_destinations) reads it.
    pub fn table(&mut self) -> Result<Table> {
        Ok(Table::from_entries(self.services_with_destinations()?))
    }

    /// Opens destination-dump sockets until there are `wanted` (best effort), and returns
    /// how many there are (0: none could be opened; read on the handle's own socket).
    fn listing_sockets(&mut self, wanted: usize) -> usize {
        while self.listers.len() < wanted {
            match self.open_lister(None) {
                Some(connection) => self.listers.push(connection),
                None => break,
            }
        }
        let timeout = self.connection.timeout();
        for lister in &mut self.listers {
            lister.set_timeout(timeout);
        }
        self.listers.len().min(wanted)
    }

    /// Opens a socket for listings in the handle's namespace, with receive slots of `slot`
    /// bytes if given (else the handle's); `None` if it cannot be opened.
    fn open_lister(&self, slot: Option<usize>) -> Option<Connection<ListingMessage>> {
        let mut options = self.lister_options.as_ref()?.duplicate()?;
        if let Some(slot) = slot {
            options.recv_slot = slot;
        }
        Connection::open("IPVS", options).ok()
    }

    /// The running sync daemons.
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        self.read(call::daemons())
    }

    /// Applies one change and waits for the kernel's acknowledgement.
    ///
    /// Starting or stopping a sync daemon is confirmed by listing the daemons when the kernel
    /// leaves it unanswered, as it does when a daemon is stopped before its thread ran (see
    /// [`Connection::request_allowing_silence`](crate::transport::Connection::request_allowing_silence)).
    pub fn apply(&mut self, operation: &Operation) -> Result<()> {
        let message = call::encode(operation, &self.features)?;
        let fail = |e| Error::transport(call::describe(operation), e);
        if !call::may_go_unanswered(operation) {
            return self.connection.request(message, 0).map(drop).map_err(fail);
        }
        match self
            .connection
            .request_allowing_silence(message)
            .map_err(fail)?
        {
            Some(_) => Ok(()),
            None => {
                let running = self
                    .daemons()
                    .map_err(|e| call::unanswered_and_unlisted(operation, e))?;
                call::settle_unanswered(operation, &running)
            }
        }
    }

    /// Applies many changes in as few system calls as possible, in order, and returns each
    /// one's result. The kernel has no transactions: a failed operation does not stop the
    /// ones after it. The outer error means the conversation itself failed (deadline, I/O).
    /// Sync-daemon operations are sent on their own, between the batches of the others (the
    /// kernel may leave them unanswered: see [`apply`](Self::apply)); each one's failure,
    /// whatever its kind, is its own result, and the operations after it are still sent.
    pub fn apply_batch<'a>(
        &mut self,
        operations: impl IntoIterator<Item = &'a Operation>,
    ) -> Result<Vec<Result<()>>> {
        let operations: Vec<&Operation> = operations.into_iter().collect();
        let mut results = Vec::with_capacity(operations.len());
        for segment in call::batch_segments(&operations) {
            match segment {
                Segment::Alone(operation) => results.push(self.apply(operation)),
                Segment::Batch(run) => {
                    let mut batch = call::Batch::new(run, &self.features);
                    let answers = self
                        .connection
                        .batch(batch.take_messages())
                        .map_err(|e| Error::transport(batch.describe(), e))?;
                    results.extend(batch.finish(answers));
                }
            }
        }
        Ok(results)
    }

    /// Adds a service.
    pub fn add_service(&mut self, service: &Service) -> Result<()> {
        self.apply(&Operation::AddService(service.clone()))
    }

    /// Replaces the settings of an existing service (its key stays).
    pub fn edit_service(&mut self, service: &Service) -> Result<()> {
        self.apply(&Operation::EditService(service.clone()))
    }

    /// Deletes a service and its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.apply(&Operation::DeleteService(*key))
    }

    /// Adds a destination to a service.
    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.apply(&Operation::AddDestination(*service, *destination))
    }

    /// Replaces a destination's settings (weight, forwarding, thresholds, tunnel).
    pub fn edit_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.apply(&Operation::EditDestination(*service, *destination))
    }

    /// Deletes a destination.
    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        destination: &DestinationKey,
    ) -> Result<()> {
        self.apply(&Operation::DeleteDestination(*service, *destination))
    }

    /// Deletes every service of the namespace, whoever created it. Prefer deleting what you own.
    pub fn flush(&mut self) -> Result<()> {
        self.apply(&Operation::Flush)
    }

    /// Zeroes the counters of one service, or of every service with `None`.
    pub fn zero_counters(&mut self, service: Option<&ServiceKey>) -> Result<()> {
        self.apply(&Operation::ZeroCounters(service.copied()))
    }

    /// Sets the timeouts that are given; the others keep their value.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<()> {
        self.apply(&Operation::SetTimeouts(*timeouts))
    }

    /// Starts a connection-synchronisation daemon.
    pub fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<()> {
        self.apply(&Operation::StartDaemon(daemon.clone()))
    }

    /// Stops the sync daemon of a role.
    pub fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        self.apply(&Operation::StopDaemon(state))
    }
}

/// Runs one read on `connection`, retrying dumps the kernel flagged inconsistent, and learns
/// what its replies prove the kernel supports.
fn read_on<T>(
    connection: &mut Connection<IpvsMessage>,
    features: &mut KernelFeatures,
    read: Read<T>,
) -> Result<T> {
    let mut attempts = 0;
    let replies = loop {
        let result = if read.request.is_dump() {
            connection.dump(read.request.to_message())
        } else {
            connection.request(read.request.to_message(), 0)
        };
        match result {
            Err(TransportError::DumpInterrupted) if attempts < call::DUMP_RETRIES => attempts += 1,
            Err(e) => return Err(Error::transport(read.operation, e)),
            Ok(replies) => break replies,
        }
    };
    *features = call::observe(*features, &replies);
    (read.decode)(&replies).map_err(|source| Error::Decode {
        operation: read.operation.into(),
        source,
    })
}

/// The destinations of each of `keys`, in order, read on `connection`, and what their
/// replies prove the kernel supports beyond `features`.
fn list_destinations(
    connection: &mut Connection<ListingMessage>,
    features: KernelFeatures,
    keys: &[ServiceKey],
) -> Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)> {
    let mut learned = features;
    let lists = keys
        .iter()
        .map(|key| {
            let operation = ReadName::Destinations(*key);
            let replies = dump_on(connection, Request::DumpDestinations(*key), operation)?;
            call::listed_destinations(replies, key.family(), &mut learned).map_err(|source| {
                Error::Decode {
                    operation: operation.into(),
                    source,
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok((lists, learned))
}

/// Runs one dump on a listing `connection`, retrying it if the kernel flagged it
/// inconsistent (as [`read_on`] does).
fn dump_on(
    connection: &mut Connection<ListingMessage>,
    request: Request,
    operation: ReadName,
) -> Result<Vec<ListingMessage>> {
    let mut attempts = 0;
    loop {
        match connection.dump(ListingMessage::Message(request.to_message())) {
            Err(TransportError::DumpInterrupted) if attempts < call::DUMP_RETRIES => attempts += 1,
            Err(e) => return Err(Error::transport(operation, e)),
            Ok(replies) => return Ok(replies),
        }
    }
}
