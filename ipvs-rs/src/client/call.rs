//! Sans-IO descriptions of the handle's calls: what to send, and how to read the answer.
//!
//! Both the blocking [`Ipvs`](super::Ipvs) and the async `AsyncIpvs` run these; neither knows
//! how to build a request or decode a reply itself.

use std::fs::File;
use std::os::fd::OwnedFd;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::error::{Error, Result};
use crate::codec::{self, DecodeError, IpvsMessage, ListingMessage, Operation, Request};
use crate::model::{
    AddressFamily, DaemonState, DestinationEntry, Info, KernelFeatures, ServiceEntry, ServiceKey,
    SyncDaemon, Timeouts,
};
use crate::transport::{KernelError, Namespace, Options, TransportError};

/// Decodes the reply messages of a read, learning what they prove the kernel supports.
pub(crate) type Decoder<M, T> =
    Box<dyn FnOnce(Vec<M>, &mut KernelFeatures) -> Result<T, DecodeError> + Send>;

/// A read: the request, a name for errors, and the decoder of its reply messages (of type
/// `M`: [`IpvsMessage`] on the handle's socket, [`ListingMessage`] on its listing sockets).
/// It runs as a [`Call`](super::machine::Call) that retries a dump the kernel flagged
/// inconsistent.
pub(crate) struct Read<M, T> {
    pub(crate) request: Request,
    pub(crate) operation: ReadName,
    /// Taken when the replies are decoded.
    pub(crate) decode: Option<Decoder<M, T>>,
    pub(crate) attempts: usize,
}

impl<M, T> Read<M, T> {
    fn new(
        request: Request,
        operation: ReadName,
        decode: impl FnOnce(Vec<M>, &mut KernelFeatures) -> Result<T, DecodeError> + Send + 'static,
    ) -> Self {
        Self {
            request,
            operation,
            decode: Some(Box::new(decode)),
            attempts: 0,
        }
    }
}

/// The message types reads are decoded from: [`IpvsMessage`] on the handle's socket,
/// [`ListingMessage`] (attribute lists skipped) on its listing sockets.
pub(crate) trait Reply:
    From<IpvsMessage>
    + GenlFamily
    + Emitable
    + ParseableParametrized<[u8], GenlHeader>
    + std::fmt::Debug
    + Sized
{
    /// Every service.
    fn services() -> Read<Self, Vec<ServiceEntry>>;
    /// The destinations of one service.
    fn destinations(key: &ServiceKey) -> Read<Self, Vec<DestinationEntry>>;
}

impl Reply for IpvsMessage {
    fn services() -> Read<Self, Vec<ServiceEntry>> {
        services()
    }

    fn destinations(key: &ServiceKey) -> Read<Self, Vec<DestinationEntry>> {
        destinations(key)
    }
}

impl Reply for ListingMessage {
    fn services() -> Read<Self, Vec<ServiceEntry>> {
        listed_services()
    }

    fn destinations(key: &ServiceKey) -> Read<Self, Vec<DestinationEntry>> {
        listed_destinations(key)
    }
}

/// A read on the handle's socket whose replies are decoded by `decode` once their features
/// were observed.
fn read<T>(
    request: Request,
    operation: ReadName,
    decode: impl FnOnce(&[IpvsMessage]) -> Result<T, DecodeError> + Send + 'static,
) -> Read<IpvsMessage, T> {
    Read::new(request, operation, move |replies, features| {
        *features = observe(*features, &replies);
        decode(&replies)
    })
}

/// The name of a read, for errors; formatted only when one happens (reads are frequent,
/// errors are not).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadName {
    /// A fixed name.
    Fixed(&'static str),
    /// Getting one service.
    Service(ServiceKey),
    /// Listing the destinations of a service.
    Destinations(ServiceKey),
}

impl From<ReadName> for String {
    fn from(name: ReadName) -> String {
        match name {
            ReadName::Fixed(name) => name.to_owned(),
            ReadName::Service(key) => format!("get service {key}"),
            ReadName::Destinations(key) => format!("list destinations of {key}"),
        }
    }
}

fn each<T>(
    decode: fn(&IpvsMessage) -> Result<T, DecodeError>,
) -> impl Fn(&[IpvsMessage]) -> Result<Vec<T>, DecodeError> {
    move |msgs| msgs.iter().map(decode).collect()
}

fn one<T>(
    msgs: &[IpvsMessage],
    decode: fn(&IpvsMessage) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    match msgs {
        [msg] => decode(msg),
        [] => Err(DecodeError::MissingAttribute("a reply message")),
        [first, ..] => decode(first),
    }
}

pub(crate) fn services() -> Read<IpvsMessage, Vec<ServiceEntry>> {
    read(
        Request::DumpServices,
        ReadName::Fixed("list services"),
        |m| each(codec::decode_service)(m).map(without_repeats),
    )
}

/// [`services`] on a listing socket.
fn listed_services() -> Read<ListingMessage, Vec<ServiceEntry>> {
    Read::new(
        Request::DumpServices,
        ReadName::Fixed("list services"),
        decode_listed_services,
    )
}

/// Drops services a dump reported more than once, keeping the latest report of each.
///
/// The kernel resumes a service dump by position in a hash table that is shared by every
/// network namespace, so services added or removed meanwhile (in any namespace) shift the
/// position and a dump can report a service twice (seen in the real-kernel tests: `ipvsadm -Sn`
/// printed one service three times). Nothing marks such a dump as interrupted.
pub(crate) fn without_repeats(services: Vec<ServiceEntry>) -> Vec<ServiceEntry> {
    let mut latest = std::collections::HashMap::with_capacity(services.len());
    for (i, entry) in services.iter().enumerate() {
        latest.insert(entry.service.key, i);
    }
    services
        .into_iter()
        .enumerate()
        .filter(|(i, entry)| latest.get(&entry.service.key) == Some(i))
        .map(|(_, entry)| entry)
        .collect()
}

pub(crate) fn service(key: &ServiceKey) -> Read<IpvsMessage, ServiceEntry> {
    read(Request::GetService(*key), ReadName::Service(*key), |m| {
        one(m, codec::decode_service)
    })
}

pub(crate) fn destinations(key: &ServiceKey) -> Read<IpvsMessage, Vec<DestinationEntry>> {
    let family = key.family();
    read(
        Request::DumpDestinations(*key),
        ReadName::Destinations(*key),
        move |m| {
            m.iter()
                .map(|m| codec::decode_destination(m, family))
                .collect()
        },
    )
}

/// [`destinations`] on a listing socket.
fn listed_destinations(key: &ServiceKey) -> Read<ListingMessage, Vec<DestinationEntry>> {
    let family = key.family();
    Read::new(
        Request::DumpDestinations(*key),
        ReadName::Destinations(*key),
        move |replies, features| decode_listed_destinations(replies, family, features),
    )
}

pub(crate) fn daemons() -> Read<IpvsMessage, Vec<SyncDaemon>> {
    read(
        Request::DumpDaemons,
        ReadName::Fixed("list sync daemons"),
        each(codec::decode_daemon),
    )
}

pub(crate) fn info() -> Read<IpvsMessage, Info> {
    read(Request::GetInfo, ReadName::Fixed("get info"), |m| {
        one(m, codec::decode_info)
    })
}

pub(crate) fn timeouts() -> Read<IpvsMessage, Timeouts> {
    read(Request::GetConfig, ReadName::Fixed("get timeouts"), |m| {
        one(m, codec::decode_timeouts)
    })
}

/// The requests of [`services_by_key`]: one `GET_SERVICE` per key, in order.
pub(crate) fn service_requests(keys: &[ServiceKey]) -> Vec<IpvsMessage> {
    keys.iter()
        .map(|key| Request::GetService(*key).to_message())
        .collect()
}

/// Reads the answers of a batch of [`service_requests`]: each key's service, or `None` where
/// the kernel has no such service. Any other refusal, or a reply that cannot be decoded,
/// fails the whole read.
pub(crate) fn services_by_key(
    keys: &[ServiceKey],
    answers: Vec<std::result::Result<Vec<IpvsMessage>, KernelError>>,
    features: &mut KernelFeatures,
) -> Result<Vec<Option<ServiceEntry>>> {
    if answers.len() != keys.len() {
        return Err(Error::transport(
            "get services",
            TransportError::protocol(format!(
                "{} answers to {} requests",
                answers.len(),
                keys.len()
            )),
        ));
    }
    keys.iter()
        .zip(answers)
        .map(|(key, answer)| match answer {
            Ok(replies) => {
                *features = observe(*features, &replies);
                one(&replies, codec::decode_service)
                    .map(Some)
                    .map_err(|source| Error::Decode {
                        operation: ReadName::Service(*key).into(),
                        source,
                    })
            }
            Err(refusal) => {
                let error = Error::rejected(ReadName::Service(*key), refusal);
                if error.kind() == super::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        })
        .collect()
}

/// Decodes the replies of a service dump read as [`ListingMessage`]s (what
/// [`services`] decodes from [`IpvsMessage`]s), learning what they prove the kernel supports.
fn decode_listed_services(
    replies: Vec<ListingMessage>,
    features: &mut KernelFeatures,
) -> Result<Vec<ServiceEntry>, DecodeError> {
    let mut services = Vec::with_capacity(replies.len());
    for reply in replies {
        services.push(match reply {
            ListingMessage::Service(fields) => {
                *features = features.with_all(fields.features());
                fields.finish()?
            }
            ListingMessage::Message(m) => {
                *features = codec::observe_features(&m, *features);
                codec::decode_service(&m)?
            }
            ListingMessage::Destination(_) => {
                return Err(DecodeError::MissingAttribute("IPVS_CMD_ATTR_SERVICE"));
            }
        });
    }
    Ok(without_repeats(services))
}

/// Decodes the replies of a destination dump of a service of `family` read as
/// [`ListingMessage`]s (what [`destinations`] decodes from [`IpvsMessage`]s), learning what
/// they prove the kernel supports.
fn decode_listed_destinations(
    replies: Vec<ListingMessage>,
    family: AddressFamily,
    features: &mut KernelFeatures,
) -> Result<Vec<DestinationEntry>, DecodeError> {
    let mut destinations = Vec::with_capacity(replies.len());
    for reply in replies {
        destinations.push(match reply {
            ListingMessage::Destination(fields) => {
                *features = features.with_all(fields.features());
                fields.finish(family)?
            }
            ListingMessage::Message(m) => {
                *features = codec::observe_features(&m, *features);
                codec::decode_destination(&m, family)?
            }
            ListingMessage::Service(_) => {
                return Err(DecodeError::MissingAttribute("IPVS_CMD_ATTR_DEST"));
            }
        });
    }
    Ok(destinations)
}

/// Services below which a full listing is read on one listing socket only: a helper thread
/// or task costs more than a few dozen round trips.
const PARALLEL_LISTING_MIN: usize = 64;

/// The most sockets a full listing reads destinations on at once.
const LISTING_SOCKETS_MAX: usize = 4;

/// The receive slot of the socket that dumps services: the largest dump chunk the kernel
/// makes. It resumes a service dump by walking past every service already sent, once per
/// chunk, so chunks eight times larger than a page make a large service dump walk the
/// table far fewer times; a destination dump, which is small, is cheaper in page-sized
/// chunks, and is read on the other sockets.
pub(crate) const SERVICE_DUMP_SLOT: usize = 32 << 10;

/// How many listing sockets the destinations of `keys` services are read on: the kernel
/// runs one dump at a time per socket, and runs it in the reader's context, so a large
/// listing is spread over a few sockets read in parallel.
pub(crate) fn listing_sockets_wanted(keys: usize) -> usize {
    if keys < PARALLEL_LISTING_MIN {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, LISTING_SOCKETS_MAX)
    }
}

/// `keys` in contiguous shares, one per socket (at most `sockets`), so that the answers,
/// joined in order, keep the order of the keys.
pub(crate) fn listing_shares(
    keys: &[ServiceKey],
    sockets: usize,
) -> std::slice::Chunks<'_, ServiceKey> {
    keys.chunks(keys.len().div_ceil(sockets.max(1)).max(1))
}

/// What each share of a parallel listing read, joined in order: the lists, and what their
/// replies proved the kernel supports, added to `features`.
pub(crate) fn join_listing_shares(
    shares: Vec<Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)>>,
    features: &mut KernelFeatures,
    keys: usize,
) -> Result<Vec<Vec<DestinationEntry>>> {
    let mut destinations = Vec::with_capacity(keys);
    for share in shares {
        let (lists, learned) = share?;
        *features = features.with_all(learned);
        destinations.extend(lists);
    }
    Ok(destinations)
}

/// The error of a share of a parallel listing whose thread or task did not finish.
pub(crate) fn listing_task_failed() -> Error {
    Error::transport(
        "list destinations",
        TransportError::io(
            "listing thread",
            std::io::Error::other("the thread or task reading a share panicked"),
        ),
    )
}

/// Options for one more listing socket, from the handle's pinned ones, with receive slots
/// of `slot` bytes if given; `None` if the namespace cannot be shared again.
pub(crate) fn lister_options(pinned: &Options, slot: Option<usize>) -> Option<Options> {
    let mut options = pinned.duplicate()?;
    if let Some(slot) = slot {
        options.recv_slot = slot;
    }
    Some(options)
}

/// Options for more sockets in the namespace `options` open the handle's socket in, pinned
/// now: the calling thread may later move to another namespace.
pub(crate) fn pinned_options(options: &Options) -> Option<Options> {
    let namespace = match &options.namespace {
        Namespace::Current => {
            Namespace::Fd(OwnedFd::from(File::open("/proc/thread-self/ns/net").ok()?))
        }
        Namespace::Path(path) => Namespace::Fd(OwnedFd::from(File::open(path).ok()?)),
        Namespace::Fd(fd) => Namespace::Fd(fd.try_clone().ok()?),
    };
    Some(options.in_namespace(namespace))
}

/// Learns what replies prove the kernel supports.
pub(crate) fn observe(features: KernelFeatures, msgs: &[IpvsMessage]) -> KernelFeatures {
    msgs.iter()
        .fold(features, |f, m| codec::observe_features(m, f))
}

/// The features of the running kernel, from its release (the network namespace does not matter).
pub(crate) fn running_kernel_features() -> KernelFeatures {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| KernelFeatures::from_release(release.trim()))
        .unwrap_or_else(|_| KernelFeatures::baseline())
}

/// How many times a dump that the kernel flagged inconsistent is retried before giving up.
pub(crate) const DUMP_RETRIES: usize = 3;

/// Encodes one operation for a kernel with `features`. The operation is described only on
/// failure: formatting addresses costs more than a successful call's encoding.
pub(crate) fn encode(operation: &Operation, features: &KernelFeatures) -> Result<IpvsMessage> {
    operation
        .to_message(features)
        .map_err(|source| Error::Encode {
            operation: describe(operation),
            source,
        })
}

/// Whether the kernel may leave `operation` unanswered: starting or stopping a sync daemon.
/// Stopping one whose thread had not yet run makes the kernel's handler return `EINTR`
/// (from `kthread_stop`), which netlink answers with nothing at all; the clients send these
/// with [`request_allowing_silence`](crate::transport::Connection::request_allowing_silence)
/// and settle the silence with [`settle_unanswered`].
pub(crate) fn may_go_unanswered(operation: &Operation) -> bool {
    matches!(
        operation,
        Operation::StartDaemon(_) | Operation::StopDaemon(_)
    )
}

/// The outcome of a daemon operation the kernel left unanswered, from the daemons running
/// after it: stopping succeeded if no daemon of that role runs, starting if one does.
pub(crate) fn settle_unanswered(operation: &Operation, running: &[SyncDaemon]) -> Result<()> {
    let runs = |state: DaemonState| running.iter().any(|d| d.state == state);
    let (done, still) = match operation {
        Operation::StopDaemon(state) => (!runs(*state), "the daemon still runs"),
        Operation::StartDaemon(daemon) => (runs(daemon.state), "no such daemon runs"),
        _ => (false, "no answer was expected to be missing"),
    };
    if done {
        return Ok(());
    }
    Err(Error::Transport {
        operation: describe(operation),
        source: TransportError::protocol(format!("the kernel did not answer, and {still}")),
    })
}

/// The error of a daemon operation the kernel left unanswered when listing the daemons, to
/// learn whether it took effect, failed too.
pub(crate) fn unanswered_and_unlisted(operation: &Operation, listing: Error) -> Error {
    Error::Transport {
        operation: describe(operation),
        source: TransportError::protocol(format!(
            "the kernel did not answer, and listing the daemons to see whether it took effect \
             failed: {listing}"
        )),
    }
}

/// How many operations of a batch are encoded and handed to the transport at a time: a
/// batch's messages are held one piece at a time whatever its size, and with the default
/// [`Options`] a piece fills whole transport chunks.
pub(crate) const BATCH_PIECE: usize = 4096;

/// Splits `operations` into runs sent as one batch and the daemon operations between them,
/// each sent alone (see [`may_go_unanswered`]): in a batch, a request the kernel leaves
/// unanswered would make the whole chunk wait for its deadline and fail.
pub(crate) fn batch_segments<'a>(operations: &[&'a Operation]) -> Vec<Segment<'a>> {
    let mut segments = Vec::new();
    let mut run: Vec<&'a Operation> = Vec::new();
    for op in operations {
        if may_go_unanswered(op) {
            if !run.is_empty() {
                segments.push(Segment::Batch(std::mem::take(&mut run)));
            }
            segments.push(Segment::Alone(op));
        } else {
            run.push(op);
        }
    }
    if !run.is_empty() {
        segments.push(Segment::Batch(run));
    }
    segments
}

/// A part of [`batch_segments`]' split.
#[derive(Debug, PartialEq)]
pub(crate) enum Segment<'a> {
    /// Operations sent together.
    Batch(Vec<&'a Operation>),
    /// An operation sent on its own.
    Alone(&'a Operation),
}

/// A short description of an operation for errors and logs.
pub(crate) fn describe(op: &Operation) -> String {
    match op {
        Operation::AddService(s) => format!("add service {}", s.key),
        Operation::EditService(s) => format!("edit service {}", s.key),
        Operation::DeleteService(k) => format!("delete service {k}"),
        Operation::AddDestination(k, d) => format!("add destination {} to {k}", d.key()),
        Operation::EditDestination(k, d) => format!("edit destination {} of {k}", d.key()),
        Operation::DeleteDestination(k, d) => format!("delete destination {d} of {k}"),
        Operation::Flush => "flush the table".into(),
        Operation::ZeroCounters(Some(k)) => format!("zero the counters of {k}"),
        Operation::ZeroCounters(None) => "zero all counters".into(),
        Operation::SetTimeouts(_) => "set timeouts".into(),
        Operation::StartDaemon(d) => format!("start the {} sync daemon", d.state),
        Operation::StopDaemon(state) => format!("stop the {state} sync daemon"),
    }
}

/// A batch of operations: encoded up front (those that cannot be encoded fail without being
/// sent), sent by the driver, and matched back to one result per operation, in order.
pub(crate) struct Batch<'a> {
    operations: Vec<&'a Operation>,
    refused: Vec<Option<Error>>,
    messages: Vec<IpvsMessage>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        operations: impl IntoIterator<Item = &'a Operation>,
        features: &KernelFeatures,
    ) -> Self {
        let operations: Vec<&Operation> = operations.into_iter().collect();
        let mut refused = Vec::with_capacity(operations.len());
        let mut messages = Vec::with_capacity(operations.len());
        for op in &operations {
            match op.to_message(features) {
                Ok(message) => {
                    messages.push(message);
                    refused.push(None);
                }
                Err(source) => refused.push(Some(Error::Encode {
                    operation: describe(op),
                    source,
                })),
            }
        }
        Self {
            operations,
            refused,
            messages,
        }
    }

    /// The messages to send (once).
    pub(crate) fn take_messages(&mut self) -> Vec<IpvsMessage> {
        std::mem::take(&mut self.messages)
    }

    /// A name for the whole batch, for errors.
    pub(crate) fn describe(&self) -> String {
        format!("apply a batch of {} operations", self.operations.len())
    }

    /// One result per operation, from the kernel's answers to the messages that were sent.
    pub(crate) fn finish(
        self,
        answers: Vec<std::result::Result<Vec<IpvsMessage>, KernelError>>,
    ) -> Vec<Result<()>> {
        let mut answers = answers.into_iter();
        self.refused
            .into_iter()
            .zip(self.operations)
            .map(|(refused, op)| match refused {
                Some(error) => Err(error),
                None => match answers.next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(Error::rejected(describe(op), e)),
                    None => Err(Error::Transport {
                        operation: describe(op),
                        source: TransportError::Protocol {
                            description: "the batch ended without a result for this request".into(),
                        },
                    }),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Segment, batch_segments, may_go_unanswered, settle_unanswered, without_repeats};
    use crate::codec::Operation;
    use crate::model::{
        DaemonState, InterfaceName, Scheduler, Service, ServiceEntry, ServiceFlags, ServiceKey,
        Stats, SyncDaemon,
    };

    #[test]
    fn an_unanswered_daemon_operation_is_settled_by_the_daemons_that_run() {
        let backup = SyncDaemon::new(
            DaemonState::Backup,
            InterfaceName::new("lo").expect("a valid name"),
            9,
        );
        let stop = Operation::StopDaemon(DaemonState::Backup);
        let start = Operation::StartDaemon(backup.clone());
        assert!(may_go_unanswered(&stop) && may_go_unanswered(&start));
        assert!(!may_go_unanswered(&Operation::Flush));
        // Stopped: no backup daemon left (a master one does not count).
        let mut master = backup.clone();
        master.state = DaemonState::Master;
        assert!(settle_unanswered(&stop, &[]).is_ok());
        assert!(settle_unanswered(&stop, std::slice::from_ref(&master)).is_ok());
        let e = settle_unanswered(&stop, std::slice::from_ref(&backup)).unwrap_err();
        assert!(
            e.to_string()
                .contains("did not answer, and the daemon still runs"),
            "{e}"
        );
        // Started: the daemon runs.
        assert!(settle_unanswered(&start, std::slice::from_ref(&backup)).is_ok());
        let e = settle_unanswered(&start, &[master]).unwrap_err();
        assert!(e.to_string().contains("no such daemon runs"), "{e}");
    }

    #[test]
    fn daemon_operations_leave_a_batch_and_go_alone() {
        let stop = Operation::StopDaemon(DaemonState::Master);
        let flush = Operation::Flush;
        let zero = Operation::ZeroCounters(None);
        assert_eq!(
            batch_segments(&[&flush, &zero, &stop, &stop, &flush]),
            [
                Segment::Batch(vec![&flush, &zero]),
                Segment::Alone(&stop),
                Segment::Alone(&stop),
                Segment::Batch(vec![&flush]),
            ]
        );
        assert_eq!(batch_segments(&[&flush]), [Segment::Batch(vec![&flush])]);
        assert_eq!(batch_segments(&[]), []);
    }

    #[test]
    fn a_service_reported_twice_is_listed_once_with_its_latest_report() {
        let entry = |port, scheduler| ServiceEntry {
            service: Service::new(
                ServiceKey::tcp(std::net::Ipv4Addr::LOCALHOST, port),
                scheduler,
            ),
            flags: ServiceFlags(0),
            stats: Stats::default(),
        };
        let listed = without_repeats(vec![
            entry(1, Scheduler::RoundRobin),
            entry(2, Scheduler::RoundRobin),
            entry(1, Scheduler::LeastConnection),
        ]);
        let ports: Vec<String> = listed
            .iter()
            .map(|e| format!("{} {}", e.service.key, e.service.scheduler))
            .collect();
        assert_eq!(ports, ["TCP 127.0.0.1:2 rr", "TCP 127.0.0.1:1 lc"]);
    }
}
