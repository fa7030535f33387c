//! The handles' state and public calls, written once for both.
//!
//! Every call is a few lines over the sans-IO [`machine`](super::machine): the blocking
//! [`Ipvs`](super::Ipvs) and the async `AsyncIpvs` differ only in how a socket is opened,
//! how an [`Ask`](super::machine::Ask) is performed, and how a large listing's shares run in
//! parallel (threads or tasks). `handle!` declares a handle's state and `calls!` emits its
//! calls, as plain methods or as `async` ones with `.await` after each step, so that a
//! fix or a new call lands in both at once and the two cannot drift.
//!
//! The module of each handle provides, under these names: `Socket` (its connection type),
//! `perform(connection, ask)` (performs one [`Ask`](super::machine::Ask) and returns its
//! outcome) and the method `destinations_of`.

/// Declares a handle: one socket for changes and reads, the kernel features known so far,
/// and the listing sockets opened in the same namespace on first use.
macro_rules! handle {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name {
            connection: Socket<$crate::codec::IpvsMessage>,
            features: $crate::model::KernelFeatures,
            /// How to open more sockets in the handle's namespace (for listings); `None` if
            /// the namespace could not be pinned (then listings use the handle's socket only).
            lister_options: Option<$crate::transport::Options>,
            /// Sockets for destination dumps (one, or several for a parallel listing), opened
            /// on first use; their replies are decoded without attribute lists
            /// ([`ListingMessage`](crate::codec::ListingMessage)).
            listers: Vec<Socket<$crate::codec::ListingMessage>>,
            /// The socket for service dumps, with large receive slots, opened on first use.
            service_lister: Option<Socket<$crate::codec::ListingMessage>>,
        }
    };
}

/// Emits a handle's calls: `calls!(blocking)` or `calls!(async)`.
macro_rules! calls {
    (blocking) => {
        $crate::client::calls::calls!(@emit [] []);
    };
    (async) => {
        $crate::client::calls::calls!(@emit [async] [.await]);
    };
    (@emit [$($async:tt)?] [$($await:tt)*]) => {
        /// Opens a handle on the calling thread's network namespace.
        pub $($async)? fn open() -> $crate::client::Result<Self> {
            Self::with_options($crate::transport::Options::default())$($await)*
        }

        /// Opens a handle on the network namespace at `path` (e.g. `/run/netns/lb` or
        /// `/proc/<pid>/ns/net`). The calling thread does not change namespace.
        pub $($async)? fn in_namespace(path: impl Into<std::path::PathBuf>) -> $crate::client::Result<Self> {
            Self::with_options($crate::transport::Options {
                namespace: $crate::transport::Namespace::Path(path.into()),
                ..$crate::transport::Options::default()
            })$($await)*
        }

        /// Opens a handle with explicit options (namespace, deadline, buffer sizes, batch
        /// limits).
        pub $($async)? fn with_options(options: $crate::transport::Options) -> $crate::client::Result<Self> {
            let lister_options = $crate::client::call::pinned_options(&options);
            let connection = Socket::open("IPVS", options)$($await)*
                .map_err(|e| $crate::client::Error::transport("open the IPVS netlink socket", e))?;
            Ok(Self {
                connection,
                features: $crate::client::call::running_kernel_features(),
                lister_options,
                listers: Vec::new(),
                service_lister: None,
            })
        }

        /// What the running kernel is known to support (from its release, upgraded by what
        /// its replies contain). Operations that need more are refused before they are sent.
        pub fn features(&self) -> $crate::model::KernelFeatures {
            self.features
        }

        /// Overrides the feature set (for kernels that backport features, or to test
        /// refusals).
        pub fn set_features(&mut self, features: $crate::model::KernelFeatures) {
            self.features = features;
        }

        /// The underlying connection (deadline, counters).
        pub fn connection(&mut self) -> &mut Socket<$crate::codec::IpvsMessage> {
            &mut self.connection
        }

        /// Runs a call on the handle's socket.
        $($async)? fn run<C: $crate::client::machine::Call<$crate::codec::IpvsMessage>>(&mut self, call: C) -> $crate::client::Result<C::Output> {
            Self::run_on(&mut self.connection, &mut self.features, call)$($await)*
        }

        /// Runs `call` on `connection` to its end: performs each ask and feeds the outcome
        /// back.
        $($async)? fn run_on<M, C>(
            connection: &mut Socket<M>,
            features: &mut $crate::model::KernelFeatures,
            mut call: C,
        ) -> $crate::client::Result<C::Output>
        where
            M: $crate::client::call::Reply,
            C: $crate::client::machine::Call<M>,
        {
            let mut outcome = None;
            loop {
                match call.next(outcome.take(), features) {
                    $crate::client::machine::Step::Done(result) => return result,
                    $crate::client::machine::Step::Ask(ask) => {
                        outcome = Some(perform(connection, ask)$($await)*)
                    }
                }
            }
        }

        /// The IPVS version and connection table size.
        pub $($async)? fn info(&mut self) -> $crate::client::Result<$crate::model::Info> {
            self.run($crate::client::call::info())$($await)*
        }

        /// The TCP, TCP FIN and UDP timeouts.
        pub $($async)? fn timeouts(&mut self) -> $crate::client::Result<$crate::model::Timeouts> {
            self.run($crate::client::call::timeouts())$($await)*
        }

        /// Every service, with its settings, flags and statistics.
        ///
        /// Read on a socket of this handle kept for service dumps (opened on first use), in
        /// chunks as large as the kernel makes them; on the handle's own socket if it cannot
        /// be opened.
        pub $($async)? fn services(&mut self) -> $crate::client::Result<Vec<$crate::model::ServiceEntry>> {
            if self.service_lister.is_none() {
                self.service_lister = self.open_lister(Some($crate::client::call::SERVICE_DUMP_SLOT))$($await)*;
            }
            let timeout = self.connection.timeout();
            match self.service_lister.as_mut() {
                Some(lister) => {
                    lister.set_timeout(timeout);
                    Self::run_on(lister, &mut self.features, <$crate::codec::ListingMessage as $crate::client::call::Reply>::services())$($await)*
                }
                None => self.run($crate::client::call::services())$($await)*,
            }
        }

        /// One service (`NotFound` if missing).
        pub $($async)? fn service(&mut self, key: &$crate::model::ServiceKey) -> $crate::client::Result<$crate::model::ServiceEntry> {
            self.run($crate::client::call::service(key))$($await)*
        }

        /// The destinations of a service (empty if the service is missing: that is what the
        /// kernel answers).
        ///
        /// Read on a socket of this handle kept for destination dumps (opened on first use),
        /// whose replies are decoded without attribute lists; on the handle's own socket if
        /// it cannot be opened.
        pub $($async)? fn destinations(&mut self, key: &$crate::model::ServiceKey) -> $crate::client::Result<Vec<$crate::model::DestinationEntry>> {
            let mut lists = self.destinations_of(std::slice::from_ref(key))$($await)*?;
            Ok(lists.pop().unwrap_or_default())
        }

        /// Several services by key, in order: `None` for a key the kernel has no service for.
        ///
        /// One `GET_SERVICE` request per key, sent together as a [batch](Self::apply_batch):
        /// a few system calls for thousands of keys, where [`service`](Self::service) costs a
        /// round trip each. A refusal other than "not found" fails the whole read.
        pub $($async)? fn services_by_key(
            &mut self,
            keys: &[$crate::model::ServiceKey],
        ) -> $crate::client::Result<Vec<Option<$crate::model::ServiceEntry>>> {
            self.run($crate::client::machine::ServicesByKey::new(keys))$($await)*
        }

        /// The whole table: every service with its destinations, settings, flags and
        /// statistics, in the order the kernel lists services.
        ///
        /// One `GET_SERVICE` dump, then the destinations of every service as
        /// [`destinations_of`](Self::destinations_of) reads them (over a few sockets for a
        /// large table). Like every dump, this is not a consistent snapshot: a service
        /// deleted meanwhile is listed without destinations.
        pub $($async)? fn services_with_destinations(
            &mut self,
        ) -> $crate::client::Result<Vec<($crate::model::ServiceEntry, Vec<$crate::model::DestinationEntry>)>> {
            let services = self.services()$($await)*?;
            let keys: Vec<$crate::model::ServiceKey> = services.iter().map(|s| s.service.key).collect();
            let destinations = self.destinations_of(&keys)$($await)*?;
            Ok(services.into_iter().zip(destinations).collect())
        }

        /// The whole table's configuration, as a [`Table`](crate::table::Table) (statistics,
        /// connection counts and kernel-set flags dropped; see
        /// [`Table::from_entries`](crate::table::Table::from_entries)). Read as
        /// [`services_with_destinations`](Self::services_with_destinations) reads it.
        pub $($async)? fn table(&mut self) -> $crate::client::Result<$crate::table::Table> {
            Ok($crate::table::Table::from_entries(self.services_with_destinations()$($await)*?))
        }

        /// Opens destination-dump sockets until there are `wanted` (best effort), and
        /// returns how many there are (0: none could be opened; read on the handle's own
        /// socket).
        $($async)? fn listing_sockets(&mut self, wanted: usize) -> usize {
            while self.listers.len() < wanted {
                match self.open_lister(None)$($await)* {
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

        /// Opens a socket for listings in the handle's namespace, with receive slots of
        /// `slot` bytes if given (else the handle's); `None` if it cannot be opened.
        $($async)? fn open_lister(&self, slot: Option<usize>) -> Option<Socket<$crate::codec::ListingMessage>> {
            let options = $crate::client::call::lister_options(self.lister_options.as_ref()?, slot)?;
            Socket::open("IPVS", options)$($await)*.ok()
        }

        /// The running sync daemons.
        pub $($async)? fn daemons(&mut self) -> $crate::client::Result<Vec<$crate::model::SyncDaemon>> {
            self.run($crate::client::call::daemons())$($await)*
        }

        /// Applies one change and waits for the kernel's acknowledgement.
        ///
        /// Starting or stopping a sync daemon is confirmed by listing the daemons when the
        /// kernel leaves it unanswered, as it does when a daemon is stopped before its thread
        /// ran (see
        /// [`Connection::request_allowing_silence`](crate::transport::Connection::request_allowing_silence)).
        pub $($async)? fn apply(&mut self, operation: &$crate::codec::Operation) -> $crate::client::Result<()> {
            self.run($crate::client::machine::Apply::new(operation))$($await)*
        }

        /// Applies many changes in as few system calls as possible, in order, and returns
        /// each one's result. The kernel has no transactions: a failed operation does not
        /// stop the ones after it. The outer error means the conversation itself failed
        /// (deadline, I/O). Sync-daemon operations are sent on their own, between the
        /// batches of the others (the kernel may leave them unanswered: see
        /// [`apply`](Self::apply)); each one's failure, whatever its kind, is its own result,
        /// and the operations after it are still sent. The operations are encoded and sent a
        /// few thousand at a time, so the messages held do not grow with the batch, and the
        /// results are held as the failures alone ([`BatchResults`](crate::BatchResults)).
        pub $($async)? fn apply_batch<'a>(
            &mut self,
            operations: impl IntoIterator<Item = &'a $crate::codec::Operation>,
        ) -> $crate::client::Result<$crate::client::BatchResults> {
            self.run($crate::client::machine::ApplyBatch::new(operations))$($await)*
        }

        /// Adds a service.
        pub $($async)? fn add_service(&mut self, service: &$crate::model::Service) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::AddService(service.clone()))$($await)*
        }

        /// Replaces the settings of an existing service (its key stays).
        pub $($async)? fn edit_service(&mut self, service: &$crate::model::Service) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::EditService(service.clone()))$($await)*
        }

        /// Deletes a service and its destinations.
        pub $($async)? fn delete_service(&mut self, key: &$crate::model::ServiceKey) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::DeleteService(*key))$($await)*
        }

        /// Adds a destination to a service.
        pub $($async)? fn add_destination(
            &mut self,
            service: &$crate::model::ServiceKey,
            destination: &$crate::model::Destination,
        ) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::AddDestination(*service, *destination))$($await)*
        }

        /// Replaces a destination's settings (weight, forwarding, thresholds, tunnel).
        pub $($async)? fn edit_destination(
            &mut self,
            service: &$crate::model::ServiceKey,
            destination: &$crate::model::Destination,
        ) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::EditDestination(*service, *destination))$($await)*
        }

        /// Deletes a destination.
        pub $($async)? fn delete_destination(
            &mut self,
            service: &$crate::model::ServiceKey,
            destination: &$crate::model::DestinationKey,
        ) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::DeleteDestination(*service, *destination))$($await)*
        }

        /// Deletes every service of the namespace, whoever created it. Prefer deleting what
        /// you own.
        pub $($async)? fn flush(&mut self) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::Flush)$($await)*
        }

        /// Zeroes the counters of one service, or of every service with `None`.
        pub $($async)? fn zero_counters(&mut self, service: Option<&$crate::model::ServiceKey>) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::ZeroCounters(service.copied()))$($await)*
        }

        /// Sets the timeouts that are given; the others keep their value.
        pub $($async)? fn set_timeouts(&mut self, timeouts: &$crate::model::Timeouts) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::SetTimeouts(*timeouts))$($await)*
        }

        /// Starts a connection-synchronisation daemon.
        pub $($async)? fn start_daemon(&mut self, daemon: &$crate::model::SyncDaemon) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::StartDaemon(daemon.clone()))$($await)*
        }

        /// Stops the sync daemon of a role.
        pub $($async)? fn stop_daemon(&mut self, state: $crate::model::DaemonState) -> $crate::client::Result<()> {
            self.apply(&$crate::codec::Operation::StopDaemon(state))$($await)*
        }
    };
}

pub(crate) use {calls, handle};
