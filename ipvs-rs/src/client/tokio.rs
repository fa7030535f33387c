//! [`AsyncIpvs`]: the async (tokio) handle, the same calls as [`Ipvs`](super::Ipvs).

use std::path::PathBuf;

use super::blocking::SERVICE_DUMP_SLOT;
use super::call::{self, Read, ReadName, Segment};
use super::error::{Error, Result};
use crate::codec::{IpvsMessage, ListingMessage, Operation, Request};
use crate::model::{
    DaemonState, Destination, DestinationEntry, DestinationKey, Info, KernelFeatures, Service,
    ServiceEntry, ServiceKey, SyncDaemon, Timeouts,
};
use crate::table::Table;
use crate::transport::{AsyncConnection, Namespace, Options, TransportError};

/// An async handle on the IPVS table of one network namespace, for tokio.
///
/// It owns one netlink socket, opened with the IPVS family resolved once, and every call has a
/// deadline ([`Options::timeout`]). Listings run on a few more sockets in the same namespace,
/// opened on first use and kept (see [`Self::services`] and [`Self::destinations`]). Calls
/// take `&mut self`: share a handle between threads behind a `Mutex`, or open one per thread
/// (sockets are cheap).
#[derive(Debug)]
pub struct AsyncIpvs {
    connection: AsyncConnection<IpvsMessage>,
    features: KernelFeatures,
    /// How to open more sockets in the handle's namespace; `None` if it could not be pinned
    /// (then everything is read on the handle's socket).
    lister_options: Option<Options>,
    /// The socket for destination dumps, opened on first use; replies are decoded without
    /// attribute lists ([`ListingMessage`]).
    lister: Option<AsyncConnection<ListingMessage>>,
    /// The socket for service dumps, with large receive slots, opened on first use.
    service_lister: Option<AsyncConnection<ListingMessage>>,
}

impl AsyncIpvs {
    /// Opens a handle on the calling thread's network namespace.
    pub async fn open() -> Result<Self> {
        Self::with_options(Options::default()).await
    }

    /// Opens a handle on the network namespace at `path` (e.g. `/run/netns/lb` or
    /// `/proc/<pid>/ns/net`). The calling thread does not change namespace.
    pub async fn in_namespace(path: impl Into<PathBuf>) -> Result<Self> {
        Self::with_options(Options {
            namespace: Namespace::Path(path.into()),
            ..Options::default()
        })
        .await
    }

    /// Opens a handle with explicit options (namespace, deadline, buffer sizes, batch limits).
    pub async fn with_options(options: Options) -> Result<Self> {
        let lister_options = call::pinned_options(&options);
        let connection = AsyncConnection::open("IPVS", options)
            .await
            .map_err(|e| Error::transport("open the IPVS netlink socket", e))?;
        Ok(Self {
            connection,
            features: call::running_kernel_features(),
            lister_options,
            lister: None,
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
    pub fn connection(&mut self) -> &mut AsyncConnection<IpvsMessage> {
        &mut self.connection
    }

    async fn read<T>(&mut self, read: Read<T>) -> Result<T> {
        let mut attempts = 0;
        let replies = loop {
            let result = if read.request.is_dump() {
                self.connection.dump(read.request.to_message()).await
            } else {
                self.connection.request(read.request.to_message(), 0).await
            };
            match result {
                Err(TransportError::DumpInterrupted) if attempts < call::DUMP_RETRIES => {
                    attempts += 1
                }
                Err(e) => return Err(Error::transport(read.operation, e)),
                Ok(replies) => break replies,
            }
        };
        self.features = call::observe(self.features, &replies);
        (read.decode)(&replies).map_err(|source| Error::Decode {
            operation: read.operation.into(),
            source,
        })
    }

    /// The IPVS version and connection table size.
    pub async fn info(&mut self) -> Result<Info> {
        self.read(call::info()).await
    }

    /// The TCP, TCP FIN and UDP timeouts.
    pub async fn timeouts(&mut self) -> Result<Timeouts> {
        self.read(call::timeouts()).await
    }

    /// Opens a socket for listings in the handle's namespace, with receive slots of `slot`
    /// bytes if given (else the handle's); `None` if it cannot be opened.
    async fn open_lister(&self, slot: Option<usize>) -> Option<AsyncConnection<ListingMessage>> {
        let mut options = self.lister_options.as_ref()?.duplicate()?;
        if let Some(slot) = slot {
            options.recv_slot = slot;
        }
        AsyncConnection::open("IPVS", options).await.ok()
    }

    /// Every service, with its settings, flags and statistics (read as
    /// [`Ipvs::services`](super::Ipvs::services) reads them).
    pub async fn services(&mut self) -> Result<Vec<ServiceEntry>> {
        if self.service_lister.is_none() {
            self.service_lister = self.open_lister(Some(SERVICE_DUMP_SLOT)).await;
        }
        let timeout = self.connection.timeout();
        let Some(lister) = self.service_lister.as_mut() else {
            return self.read(call::services()).await;
        };
        lister.set_timeout(timeout);
        let operation = ReadName::Fixed("list services");
        let replies = dump_on(lister, Request::DumpServices, operation).await?;
        call::listed_services(replies, &mut self.features).map_err(|source| Error::Decode {
            operation: operation.into(),
            source,
        })
    }

    /// One service (`NotFound` if missing).
    pub async fn service(&mut self, key: &ServiceKey) -> Result<ServiceEntry> {
        self.read(call::service(key)).await
    }

    /// The destinations of a service (empty if the service is missing: that is what the
    /// kernel answers), read as [`Ipvs::destinations`](super::Ipvs::destinations) reads them.
    pub async fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        if self.lister.is_none() {
            self.lister = self.open_lister(None).await;
        }
        let timeout = self.connection.timeout();
        let Some(lister) = self.lister.as_mut() else {
            return self.read(call::destinations(key)).await;
        };
        lister.set_timeout(timeout);
        let operation = ReadName::Destinations(*key);
        let replies = dump_on(lister, Request::DumpDestinations(*key), operation).await?;
        call::listed_destinations(replies, key.family(), &mut self.features).map_err(|source| {
            Error::Decode {
                operation: operation.into(),
                source,
            }
        })
    }

    /// Several services by key, in order: `None` for a key the kernel has no service for
    /// (one `GET_SERVICE` request per key, sent together as a batch; see
    /// [`Ipvs::services_by_key`](super::Ipvs::services_by_key)).
    pub async fn services_by_key(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Option<ServiceEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self
            .connection
            .batch(call::service_requests(keys))
            .await
            .map_err(|e| Error::transport("get services", e))?;
        call::services_by_key(keys, answers, &mut self.features)
    }

    /// The destinations of each of `keys`, in order (one `GET_DEST` dump per key, on the
    /// handle's socket for destination dumps; empty for a missing service, as the kernel
    /// answers).
    pub async fn destinations_of(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Vec<DestinationEntry>>> {
        let mut lists = Vec::with_capacity(keys.len());
        for key in keys {
            lists.push(self.destinations(key).await?);
        }
        Ok(lists)
    }

    /// The whole table: every service with its destinations, in the order the kernel lists
    /// services (one `GET_SERVICE` dump, then one `GET_DEST` dump per service, on the handle's
    /// sockets for dumps). Not a consistent snapshot, like every dump.
    pub async fn services_with_destinations(
        &mut self,
    ) -> Result<Vec<(ServiceEntry, Vec<DestinationEntry>)>> {
        let services = self.services().await?;
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.service.key).collect();
        let destinations = self.destinations_of(&keys).await?;
        Ok(services.into_iter().zip(destinations).collect())
    }

    /// The whole table's configuration, as a [`Table`] (see
    /// [`Ipvs::table`](super::Ipvs::table)).
    pub async fn table(&mut self) -> Result<Table> {
        Ok(Table::from_entries(
            self.services_with_destinations().await?,
        ))
    }

    /// The running sync daemons.
    pub async fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        self.read(call::daemons()).await
    }

    /// Applies one change and waits for the kernel's acknowledgement.
    ///
    /// Starting or stopping a sync daemon is confirmed by listing the daemons when the kernel
    /// leaves it unanswered, as it does when a daemon is stopped before its thread ran (see
    /// [`Connection::request_allowing_silence`](crate::transport::Connection::request_allowing_silence)).
    pub async fn apply(&mut self, operation: &Operation) -> Result<()> {
        let message = call::encode(operation, &self.features)?;
        let fail = |e| Error::transport(call::describe(operation), e);
        if !call::may_go_unanswered(operation) {
            return self
                .connection
                .request(message, 0)
                .await
                .map(drop)
                .map_err(fail);
        }
        match self
            .connection
            .request_allowing_silence(message)
            .await
            .map_err(fail)?
        {
            Some(_) => Ok(()),
            None => {
                let running = self
                    .daemons()
                    .await
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
    pub async fn apply_batch<'a>(
        &mut self,
        operations: impl IntoIterator<Item = &'a Operation>,
    ) -> Result<Vec<Result<()>>> {
        let operations: Vec<&Operation> = operations.into_iter().collect();
        let mut results = Vec::with_capacity(operations.len());
        for segment in call::batch_segments(&operations) {
            match segment {
                Segment::Alone(operation) => results.push(self.apply(operation).await),
                Segment::Batch(run) => {
                    let mut batch = call::Batch::new(run, &self.features);
                    let answers = self
                        .connection
                        .batch(batch.take_messages())
                        .await
                        .map_err(|e| Error::transport(batch.describe(), e))?;
                    results.extend(batch.finish(answers));
                }
            }
        }
        Ok(results)
    }

    /// Adds a service.
    pub async fn add_service(&mut self, service: &Service) -> Result<()> {
        self.apply(&Operation::AddService(service.clone())).await
    }

    /// Replaces the settings of an existing service (its key stays).
    pub async fn edit_service(&mut self, service: &Service) -> Result<()> {
        self.apply(&Operation::EditService(service.clone())).await
    }

    /// Deletes a service and its destinations.
    pub async fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.apply(&Operation::DeleteService(*key)).await
    }

    /// Adds a destination to a service.
    pub async fn add_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.apply(&Operation::AddDestination(*service, *destination))
            .await
    }

    /// Replaces a destination's settings (weight, forwarding, thresholds, tunnel).
    pub async fn edit_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<()> {
        self.apply(&Operation::EditDestination(*service, *destination))
            .await
    }

    /// Deletes a destination.
    pub async fn delete_destination(
        &mut self,
        service: &ServiceKey,
        destination: &DestinationKey,
    ) -> Result<()> {
        self.apply(&Operation::DeleteDestination(*service, *destination))
            .await
    }

    /// Deletes every service of the namespace, whoever created it. Prefer deleting what you own.
    pub async fn flush(&mut self) -> Result<()> {
        self.apply(&Operation::Flush).await
    }

    /// Zeroes the counters of one service, or of every service with `None`.
    pub async fn zero_counters(&mut self, service: Option<&ServiceKey>) -> Result<()> {
        self.apply(&Operation::ZeroCounters(service.copied())).await
    }

    /// Sets the timeouts that are given; the others keep their value.
    pub async fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<()> {
        self.apply(&Operation::SetTimeouts(*timeouts)).await
    }

    /// Starts a connection-synchronisation daemon.
    pub async fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<()> {
        self.apply(&Operation::StartDaemon(daemon.clone())).await
    }

    /// Stops the sync daemon of a role.
    pub async fn stop_daemon(&mut self, state: DaemonState) -> Result<()> {
        self.apply(&Operation::StopDaemon(state)).await
    }
}

/// Runs one dump on a listing `connection`, retrying it if the kernel flagged it
/// inconsistent (as [`AsyncIpvs::read`] does).
async fn dump_on(
    connection: &mut AsyncConnection<ListingMessage>,
    request: Request,
    operation: ReadName,
) -> Result<Vec<ListingMessage>> {
    let mut attempts = 0;
    loop {
        match connection
            .dump(ListingMessage::Message(request.to_message()))
            .await
        {
            Err(TransportError::DumpInterrupted) if attempts < call::DUMP_RETRIES => attempts += 1,
            Err(e) => return Err(Error::transport(operation, e)),
            Ok(replies) => return Ok(replies),
        }
    }
}
