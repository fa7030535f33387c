//! [`AsyncIpvs`]: the async (tokio) handle. Its calls are written once in
//! [`calls`](super::calls); this module opens its sockets on tokio's reactor, performs each
//! ask asynchronously under a deadline, and reads a large listing's shares in spawned tasks.

use super::call::{self, Reply};
use super::calls::{calls, handle};
use super::error::Result;
use super::machine::{Answer, Ask, DestinationLists, Outcome};
use crate::codec::{IpvsMessage, ListingMessage};
use crate::model::{DestinationEntry, KernelFeatures, ServiceKey};
use crate::transport::AsyncConnection as Socket;

handle! {
    /// An async handle on the IPVS table of one network namespace, for tokio: the same calls,
    /// sockets, deadlines and listings as the blocking [`Ipvs`](super::Ipvs), written once
    /// for both. A large listing's shares are read by tasks spawned on the runtime, where the
    /// blocking handle uses threads.
    AsyncIpvs
}

impl AsyncIpvs {
    calls!(async);

    /// The destinations of each of `keys`, in order (empty for a missing service, as the
    /// kernel answers), read as [`Ipvs::destinations_of`](super::Ipvs::destinations_of)
    /// reads them; the shares of a large listing are read by tasks spawned on the runtime.
    pub async fn destinations_of(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Vec<DestinationEntry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sockets = self
            .listing_sockets(call::listing_sockets_wanted(keys.len()))
            .await;
        if sockets == 0 {
            return self.run(DestinationLists::<IpvsMessage>::new(keys)).await;
        }
        let features = self.features;
        let mut listers = std::mem::take(&mut self.listers).into_iter();
        let mut shares = call::listing_shares(keys, sockets);
        let own = (shares.next(), listers.next());
        // The other shares go to tasks, each with its socket, given back when it is done; a
        // task whose socket is lost (it panicked, or this call was dropped) leaves one socket
        // fewer, opened again on next use.
        let tasks: Vec<_> = shares
            .zip(listers.by_ref())
            .map(|(share, mut connection)| {
                let share = share.to_vec();
                tokio::spawn(async move {
                    let result = list_destinations(&mut connection, features, &share).await;
                    (connection, result)
                })
            })
            .collect();
        self.listers.extend(listers);
        let mut results = Vec::with_capacity(tasks.len() + 1);
        match own {
            (Some(share), Some(mut connection)) => {
                results.push(list_destinations(&mut connection, features, share).await);
                self.listers.push(connection);
            }
            (None, Some(connection)) => self.listers.push(connection),
            (_, None) => {}
        }
        for task in tasks {
            results.push(match task.await {
                Ok((connection, result)) => {
                    self.listers.push(connection);
                    result
                }
                Err(_) => Err(call::listing_task_failed()),
            });
        }
        call::join_listing_shares(results, &mut self.features, keys.len())
    }
}

/// Performs one ask on `connection`.
async fn perform<M: Reply>(connection: &mut Socket<M>, ask: Ask<M>) -> Outcome<M> {
    match ask {
        Ask::Request(message) => connection.request(message, 0).await.map(Answer::Replies),
        Ask::Dump(message) => connection.dump(message).await.map(Answer::Replies),
        Ask::AllowingSilence(message) => connection
            .request_allowing_silence(message)
            .await
            .map(|replies| replies.map_or(Answer::Silence, Answer::Replies)),
        Ask::Batch(messages) => connection.batch(messages).await.map(Answer::Batch),
    }
}

/// The destinations of each of `keys`, in order, read on a listing `connection`, and what
/// their replies prove the kernel supports beyond `features`.
async fn list_destinations(
    connection: &mut Socket<ListingMessage>,
    mut features: KernelFeatures,
    keys: &[ServiceKey],
) -> Result<(Vec<Vec<DestinationEntry>>, KernelFeatures)> {
    AsyncIpvs::run_on(connection, &mut features, DestinationLists::new(keys))
        .await
        .map(|lists| (lists, features))
}
