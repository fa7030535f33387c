//! Whole calls as state machines: what a call asks of its socket, step by step, and what it
//! makes of the answers.
//!
//! A call is more than one request: a read retries a dump the kernel flagged inconsistent; a
//! sync-daemon operation the kernel left unanswered is settled by listing the daemons; a batch
//! of changes is split around such operations; a listing reads one dump per service. Each is
//! written here once, as a [`Call`]. The blocking and tokio drivers only perform each [`Ask`]
//! on their socket and feed the outcome back, so both handles behave alike by construction.

use std::collections::VecDeque;

use super::call::{self, Batch, Read, Reply, Segment};
use super::error::{Error, Result};
use super::results::BatchResults;
use crate::codec::{IpvsMessage, Operation};
use crate::model::{DestinationEntry, KernelFeatures, ServiceEntry, ServiceKey, SyncDaemon};
use crate::transport::{KernelError, TransportError};

/// What a call asks its driver to do on a socket.
#[derive(Debug)]
pub(crate) enum Ask<M> {
    /// Send one request and wait for its answer.
    Request(M),
    /// Send a dump request and read the whole dump.
    Dump(M),
    /// Send one request the kernel may leave unanswered.
    AllowingSilence(M),
    /// Send many requests in chunks, each with its own answer.
    Batch(Vec<M>),
}

/// What the driver got for an [`Ask`] that did not fail as a whole.
#[derive(Debug)]
pub(crate) enum Answer<M> {
    /// The replies of a request or a dump.
    Replies(Vec<M>),
    /// No answer to an [`Ask::AllowingSilence`].
    Silence,
    /// One answer per request of an [`Ask::Batch`], in order.
    Batch(Vec<std::result::Result<Vec<M>, KernelError>>),
}

/// The outcome of an [`Ask`], as the driver feeds it back.
pub(crate) type Outcome<M> = std::result::Result<Answer<M>, TransportError>;

/// A call's next step.
#[derive(Debug)]
pub(crate) enum Step<M, T> {
    /// Perform this and call [`Call::next`] with the outcome.
    Ask(Ask<M>),
    /// The call is over.
    Done(Result<T>),
}

/// One call of a handle, on sockets carrying messages of type `M`.
pub(crate) trait Call<M> {
    /// What the call returns.
    type Output;

    /// The next step: first with `None`, then with the outcome of each [`Step::Ask`]. The
    /// call learns from the replies what the kernel supports, and encodes with `features`.
    fn next(
        &mut self,
        outcome: Option<Outcome<M>>,
        features: &mut KernelFeatures,
    ) -> Step<M, Self::Output>;
}

/// The error of a driver that answered an [`Ask`] with the wrong kind of [`Answer`]: a bug.
fn mismatched(operation: impl Into<String>) -> Error {
    Error::transport(
        operation,
        TransportError::protocol("the driver answered with the wrong kind of answer"),
    )
}

impl<M: From<IpvsMessage>, T> Call<M> for Read<M, T> {
    type Output = T;

    fn next(&mut self, outcome: Option<Outcome<M>>, features: &mut KernelFeatures) -> Step<M, T> {
        match outcome {
            None => Step::Ask(self.ask()),
            Some(Err(TransportError::DumpInterrupted)) if self.attempts < call::DUMP_RETRIES => {
                self.attempts += 1;
                Step::Ask(self.ask())
            }
            Some(Err(e)) => Step::Done(Err(Error::transport(self.operation, e))),
            Some(Ok(Answer::Replies(replies))) => match self.decode.take() {
                Some(decode) => {
                    Step::Done(decode(replies, features).map_err(|source| Error::Decode {
                        operation: self.operation.into(),
                        source,
                    }))
                }
                None => Step::Done(Err(mismatched(self.operation))),
            },
            Some(Ok(_)) => Step::Done(Err(mismatched(self.operation))),
        }
    }
}

impl<M, T> Read<M, T> {
    fn ask(&self) -> Ask<M>
    where
        M: From<IpvsMessage>,
    {
        let message = M::from(self.request.to_message());
        if self.request.is_dump() {
            Ask::Dump(message)
        } else {
            Ask::Request(message)
        }
    }
}

/// One change, acknowledged by the kernel. A sync-daemon operation the kernel leaves
/// unanswered (see [`call::may_go_unanswered`]) is settled by listing the daemons.
pub(crate) struct Apply<'a> {
    operation: &'a Operation,
    state: ApplyState,
}

enum ApplyState {
    Start,
    Sent,
    /// Listing the daemons after the kernel left the operation unanswered.
    Settling(Read<IpvsMessage, Vec<SyncDaemon>>),
}

impl<'a> Apply<'a> {
    pub(crate) fn new(operation: &'a Operation) -> Self {
        Self {
            operation,
            state: ApplyState::Start,
        }
    }
}

impl Call<IpvsMessage> for Apply<'_> {
    type Output = ();

    fn next(
        &mut self,
        outcome: Option<Outcome<IpvsMessage>>,
        features: &mut KernelFeatures,
    ) -> Step<IpvsMessage, ()> {
        let operation = self.operation;
        match (&mut self.state, outcome) {
            (ApplyState::Start, _) => {
                let message = match call::encode(operation, features) {
                    Ok(message) => message,
                    Err(e) => return Step::Done(Err(e)),
                };
                self.state = ApplyState::Sent;
                Step::Ask(if call::may_go_unanswered(operation) {
                    Ask::AllowingSilence(message)
                } else {
                    Ask::Request(message)
                })
            }
            (ApplyState::Sent, Some(Ok(Answer::Replies(_)))) => Step::Done(Ok(())),
            (ApplyState::Sent, Some(Ok(Answer::Silence))) => {
                let mut listing = call::daemons();
                let step = listing.next(None, features);
                self.state = ApplyState::Settling(listing);
                self.settle(step)
            }
            (ApplyState::Sent, Some(Err(e))) => {
                Step::Done(Err(Error::transport(call::describe(operation), e)))
            }
            (ApplyState::Settling(listing), Some(outcome)) => {
                let step = listing.next(Some(outcome), features);
                self.settle(step)
            }
            (_, _) => Step::Done(Err(mismatched(call::describe(operation)))),
        }
    }
}

impl Apply<'_> {
    fn settle(&self, step: Step<IpvsMessage, Vec<SyncDaemon>>) -> Step<IpvsMessage, ()> {
        match step {
            Step::Ask(ask) => Step::Ask(ask),
            Step::Done(Ok(running)) => {
                Step::Done(call::settle_unanswered(self.operation, &running))
            }
            Step::Done(Err(e)) => Step::Done(Err(call::unanswered_and_unlisted(self.operation, e))),
        }
    }
}

/// Many changes in as few system calls as possible, in order, each with its own result;
/// sync-daemon operations go alone between the batches of the others
/// ([`call::batch_segments`]), and a long run is encoded and sent [`call::BATCH_PIECE`]
/// operations at a time, so that its memory does not grow with the batch.
pub(crate) struct ApplyBatch<'a> {
    segments: VecDeque<Segment<'a>>,
    results: BatchResults,
    state: BatchState<'a>,
}

enum BatchState<'a> {
    Idle,
    Alone(Apply<'a>),
    Sent(Batch<'a>),
}

impl<'a> ApplyBatch<'a> {
    pub(crate) fn new(operations: impl IntoIterator<Item = &'a Operation>) -> Self {
        let operations: Vec<&Operation> = operations.into_iter().collect();
        Self {
            results: BatchResults::default(),
            segments: call::batch_segments(&operations).into(),
            state: BatchState::Idle,
        }
    }
}

impl<'a> Call<IpvsMessage> for ApplyBatch<'a> {
    type Output = BatchResults;

    fn next(
        &mut self,
        mut outcome: Option<Outcome<IpvsMessage>>,
        features: &mut KernelFeatures,
    ) -> Step<IpvsMessage, Self::Output> {
        loop {
            match std::mem::replace(&mut self.state, BatchState::Idle) {
                BatchState::Idle => match self.segments.pop_front() {
                    None => return Step::Done(Ok(std::mem::take(&mut self.results))),
                    Some(Segment::Alone(operation)) => {
                        self.state = BatchState::Alone(Apply::new(operation));
                        outcome = None;
                    }
                    Some(Segment::Batch(mut run)) => {
                        // A piece at a time: only one piece's messages are held.
                        if run.len() > call::BATCH_PIECE {
                            let rest = run.split_off(call::BATCH_PIECE);
                            self.segments.push_front(Segment::Batch(rest));
                        }
                        let mut batch = Batch::new(run, features);
                        let messages = batch.take_messages();
                        self.state = BatchState::Sent(batch);
                        return Step::Ask(Ask::Batch(messages));
                    }
                },
                BatchState::Alone(mut apply) => match apply.next(outcome.take(), features) {
                    Step::Ask(ask) => {
                        self.state = BatchState::Alone(apply);
                        return Step::Ask(ask);
                    }
                    Step::Done(result) => self.results.push(result),
                },
                BatchState::Sent(batch) => match outcome.take() {
                    Some(Ok(Answer::Batch(answers))) => {
                        for result in batch.finish(answers) {
                            self.results.push(result);
                        }
                    }
                    Some(Err(e)) => return Step::Done(Err(Error::transport(batch.describe(), e))),
                    _ => return Step::Done(Err(mismatched(batch.describe()))),
                },
            }
        }
    }
}

/// Several services by key, in order: `None` for a key the kernel has no service for. One
/// `GET_SERVICE` request per key, sent together as a batch.
pub(crate) struct ServicesByKey<'a> {
    keys: &'a [ServiceKey],
    sent: bool,
}

impl<'a> ServicesByKey<'a> {
    pub(crate) fn new(keys: &'a [ServiceKey]) -> Self {
        Self { keys, sent: false }
    }
}

impl Call<IpvsMessage> for ServicesByKey<'_> {
    type Output = Vec<Option<ServiceEntry>>;

    fn next(
        &mut self,
        outcome: Option<Outcome<IpvsMessage>>,
        features: &mut KernelFeatures,
    ) -> Step<IpvsMessage, Self::Output> {
        if self.keys.is_empty() {
            return Step::Done(Ok(Vec::new()));
        }
        match outcome {
            None if !self.sent => {
                self.sent = true;
                Step::Ask(Ask::Batch(call::service_requests(self.keys)))
            }
            Some(Ok(Answer::Batch(answers))) => {
                Step::Done(call::services_by_key(self.keys, answers, features))
            }
            Some(Err(e)) => Step::Done(Err(Error::transport("get services", e))),
            _ => Step::Done(Err(mismatched("get services"))),
        }
    }
}

/// The destinations of each of `keys`, in order, one dump after the other on one listing
/// socket (empty for a missing service, as the kernel answers).
pub(crate) struct DestinationLists<'a, M> {
    keys: std::slice::Iter<'a, ServiceKey>,
    current: Option<Read<M, Vec<DestinationEntry>>>,
    lists: Vec<Vec<DestinationEntry>>,
}

impl<'a, M> DestinationLists<'a, M> {
    pub(crate) fn new(keys: &'a [ServiceKey]) -> Self {
        Self {
            keys: keys.iter(),
            current: None,
            lists: Vec::with_capacity(keys.len()),
        }
    }
}

impl<M: Reply> Call<M> for DestinationLists<'_, M> {
    type Output = Vec<Vec<DestinationEntry>>;

    fn next(
        &mut self,
        mut outcome: Option<Outcome<M>>,
        features: &mut KernelFeatures,
    ) -> Step<M, Self::Output> {
        loop {
            let Some(read) = self.current.as_mut() else {
                let Some(key) = self.keys.next() else {
                    return Step::Done(Ok(std::mem::take(&mut self.lists)));
                };
                self.current = Some(M::destinations(key));
                outcome = None;
                continue;
            };
            match read.next(outcome.take(), features) {
                Step::Ask(ask) => return Step::Ask(ask),
                Step::Done(Ok(list)) => {
                    self.lists.push(list);
                    self.current = None;
                }
                Step::Done(Err(e)) => return Step::Done(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::client::ErrorKind;
    use crate::model::DaemonState;

    /// What kind of [`Ask`] a call made, and how many requests it carried.
    fn kind<M>(ask: &Ask<M>) -> String {
        match ask {
            Ask::Request(_) => "request".into(),
            Ask::Dump(_) => "dump".into(),
            Ask::AllowingSilence(_) => "allowing silence".into(),
            Ask::Batch(messages) => format!("batch of {}", messages.len()),
        }
    }

    /// Runs `call` against scripted outcomes, one per ask; returns the asks made and the
    /// call's result. A call that asks more than the script holds fails the test.
    fn drive<M, C: Call<M>>(
        mut call: C,
        script: Vec<Outcome<M>>,
    ) -> (Vec<String>, Result<C::Output>) {
        let mut script = VecDeque::from(script);
        let mut features = KernelFeatures::baseline();
        let mut asks = Vec::new();
        let mut outcome = None;
        loop {
            match call.next(outcome.take(), &mut features) {
                Step::Done(result) => {
                    assert!(script.is_empty(), "{} outcomes left unused", script.len());
                    return (asks, result);
                }
                Step::Ask(ask) => {
                    asks.push(kind(&ask));
                    outcome = Some(script.pop_front().expect("the call asked once too often"));
                }
            }
        }
    }

    fn replies<M>() -> Outcome<M> {
        Ok(Answer::Replies(Vec::new()))
    }

    #[test]
    fn a_read_retries_an_interrupted_dump_three_times_then_fails() {
        let interrupted = || Err(TransportError::DumpInterrupted);
        let (asks, result) = drive(
            call::daemons(),
            vec![interrupted(), interrupted(), replies()],
        );
        assert_eq!(asks, ["dump", "dump", "dump"]);
        assert!(result.expect("the third dump succeeded").is_empty());

        let script = (0..=call::DUMP_RETRIES).map(|_| interrupted()).collect();
        let (asks, result) = drive(call::daemons(), script);
        assert_eq!(asks.len(), call::DUMP_RETRIES + 1);
        let error = result.expect_err("every dump was interrupted");
        assert_eq!(error.kind(), ErrorKind::Inconsistent);
        assert!(error.to_string().contains("list sync daemons"), "{error}");

        let overrun = Err(TransportError::Overrun);
        let (asks, result) = drive(call::daemons(), vec![overrun]);
        assert_eq!(asks, ["dump"], "only an interrupted dump is retried");
        assert_eq!(result.map_err(|e| e.kind()).err(), Some(ErrorKind::Overrun));

        let (asks, result) = drive(call::info(), vec![replies()]);
        assert_eq!(asks, ["request"], "a read of one object is a request");
        assert!(
            result.is_err(),
            "an answer without a message does not decode"
        );
    }

    #[test]
    fn an_unanswered_daemon_operation_is_settled_by_listing_the_daemons() {
        let stop = Operation::StopDaemon(DaemonState::Backup);
        let (asks, result) = drive(Apply::new(&stop), vec![Ok(Answer::Silence), replies()]);
        assert_eq!(asks, ["allowing silence", "dump"]);
        result.expect("no backup daemon runs: stopped");

        let (_, result) = drive(
            Apply::new(&stop),
            vec![
                Ok(Answer::Silence),
                Err(TransportError::Timeout {
                    timeout: std::time::Duration::from_secs(1),
                    pending: 1,
                }),
            ],
        );
        let error = result.expect_err("the listing failed");
        assert!(error.to_string().contains("listing the daemons"), "{error}");

        let (asks, result) = drive(Apply::new(&stop), vec![replies()]);
        assert_eq!(asks, ["allowing silence"], "an answer settles it");
        result.expect("acknowledged");

        let (asks, result) = drive(Apply::new(&Operation::Flush), vec![replies()]);
        assert_eq!(asks, ["request"]);
        result.expect("acknowledged");
    }

    #[test]
    fn a_batch_goes_in_runs_with_daemon_operations_alone_between_them() {
        let flush = Operation::Flush;
        let zero = Operation::ZeroCounters(None);
        let stop = Operation::StopDaemon(DaemonState::Master);
        let operations = [&flush, &zero, &stop, &flush];
        let (asks, result) = drive(
            ApplyBatch::new(operations),
            vec![
                Ok(Answer::Batch(vec![
                    Ok(Vec::new()),
                    Err(KernelError::new(1)),
                ])),
                Ok(Answer::Silence),
                replies(),
                Ok(Answer::Batch(vec![Ok(Vec::new())])),
            ],
        );
        assert_eq!(
            asks,
            ["batch of 2", "allowing silence", "dump", "batch of 1"]
        );
        let results = result.expect("the conversation held");
        assert_eq!(results.len(), 4);
        let oks: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
        assert_eq!(oks, [true, false, true, true]);
        assert_eq!(
            results.get(1).map(|r| r.map_err(Error::kind)),
            Some(Err(ErrorKind::PermissionDenied))
        );

        let (_, result) = drive(
            ApplyBatch::new([&flush]),
            vec![Err(TransportError::protocol("lost"))],
        );
        assert!(result.is_err(), "a failed conversation fails the batch");

        let (asks, result) = drive(ApplyBatch::new([]), vec![]);
        assert!(asks.is_empty());
        assert!(result.expect("nothing to do").is_empty());
    }

    #[test]
    fn a_long_batch_is_encoded_and_sent_a_piece_at_a_time() {
        let zero = Operation::ZeroCounters(None);
        let count = 2 * call::BATCH_PIECE + 3;
        let operations = vec![&zero; count];
        let acks = |n: usize| Ok(Answer::Batch((0..n).map(|_| Ok(Vec::new())).collect()));
        let (asks, result) = drive(
            ApplyBatch::new(operations),
            vec![acks(call::BATCH_PIECE), acks(call::BATCH_PIECE), acks(3)],
        );
        let piece = format!("batch of {}", call::BATCH_PIECE);
        assert_eq!(asks, [piece.as_str(), piece.as_str(), "batch of 3"]);
        let results = result.expect("the conversation held");
        assert_eq!(results.len(), count);
        assert!(results.all_succeeded());
    }

    #[test]
    fn listings_read_one_dump_per_key_in_order() {
        let keys = [
            ServiceKey::tcp(std::net::Ipv4Addr::LOCALHOST, 1),
            ServiceKey::udp(std::net::Ipv4Addr::LOCALHOST, 2),
        ];
        let (asks, result) = drive(
            DestinationLists::<IpvsMessage>::new(&keys),
            vec![replies(), replies()],
        );
        assert_eq!(asks, ["dump", "dump"]);
        assert_eq!(result.expect("listed").len(), 2);

        let (asks, result) = drive(ServicesByKey::new(&[]), vec![]);
        assert!(asks.is_empty(), "no key, no request");
        assert!(result.expect("nothing to read").is_empty());
        let (asks, result) = drive(
            ServicesByKey::new(&keys),
            vec![Ok(Answer::Batch(vec![
                Err(KernelError::new(3)),
                Err(KernelError::new(3)),
            ]))],
        );
        assert_eq!(asks, ["batch of 2"]);
        assert_eq!(result.expect("ESRCH is 'none'"), [None, None]);
    }
}
