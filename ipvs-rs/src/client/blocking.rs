//! [`Ipvs`]: the blocking handle. Its calls are written once in [`calls`](super::calls);
//! this module opens its sockets, performs each ask with blocking system calls under a
//! deadline, and reads a large listing's shares on threads.

use super::call::{self, Reply};
use super::calls::{calls, handle};
use super::error::Result;
use super::machine::{Answer, Ask, DestinationLists, Outcome};
use crate::codec::{IpvsMessage, ListingMessage};
use crate::model::{DestinationEntry, KernelFeatures, ServiceKey};
use crate::transport::Connection as Socket;

handle! {
    /// A blocking handle on the IPVS table of one network namespace.
    ///
    /// It owns one netlink socket, opened with the IPVS family resolved once, and every call
    /// has a deadline ([`Options::timeout`](crate::transport::Options::timeout)). Listings run on a few more sockets in the same
    /// namespace, opened on first use and kept (see [`Self::services`] and
    /// [`Self::destinations`]). Calls take `&mut self`: share a handle between threads behind
    /// a `Mutex`, or open one per thread (sockets are cheap).
    Ipvs
}

impl Ipvs {
    calls!(blocking);

    /// The destinations of each of `keys`, in order (empty for a missing service, as the
    /// kernel answers).
    ///
    /// One `GET_DEST` dump per key. The kernel runs one dump at a time per socket, so for
    /// many keys the dumps are spread over a few extra sockets of this handle (opened in its
    /// namespace on first use and kept), each driven by a short-lived thread.
    pub fn destinations_of(&mut self, keys: &[ServiceKey]) -> Result<Vec<Vec<DestinationEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sockets = self.listing_sockets(call::listing_sockets_wanted(keys.len()));
        if sockets == 0 {
            return self.run(DestinationLists::<IpvsMessage>::new(keys));
        }
        // Contiguous shares, one per socket, so the answers keep the order of the keys.
        let features = self.features;
        let results: Vec<Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)>> =
            std::thread::scope(|scope| {
                let mut shares = call::listing_shares(keys, sockets);
                let mut connections = self.listers.iter_mut();
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
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(call::listing_task_failed()))
                }));
                results
            });
        call::join_listing_shares(results, &mut self.features, keys.len())
    }
}

/// Performs one ask on `connection`.
fn perform<M: Reply>(connection: &mut Socket<M>, ask: Ask<M>) -> Outcome<M> {
    match ask {
        Ask::Request(message) => connection.request(message, 0).map(Answer::Replies),
        Ask::Dump(message) => connection.dump(message).map(Answer::Replies),
        Ask::AllowingSilence(message) => connection
            .request_allowing_silence(message)
            .map(|replies| replies.map_or(Answer::Silence, Answer::Replies)),
        Ask::Batch(messages) => connection.batch(messages).map(Answer::Batch),
    }
}

/// The destinations of each of `keys`, in order, read on a listing `connection`, and what
/// their replies prove the kernel supports beyond `features`.
fn list_destinations(
    connection: &mut Socket<ListingMessage>,
    mut features: KernelFeatures,
    keys: &[ServiceKey],
) -> Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)> {
    Ipvs::run_on(connection, &mut features, DestinationLists::new(keys))
        .map(|lists| (lists, features))
}
