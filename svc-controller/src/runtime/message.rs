//! What sources tell the engine: [`Message`]s, each a [`Change`] to one kind of object.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// What sources (and a program's signal handler) tell the engine.
#[derive(Debug, Clone, PartialEq)]
// Messages are moved once, through a channel; boxing every object would cost an allocation
// per event for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// Services changed.
    Services(Change<Service>),
    /// EndpointSlices changed.
    Slices(Change<EndpointSlice>),
    /// This node's Node object changed (a `Reset` with no object: it does not exist).
    Node(Change<Node>),
    /// Stop: leave the table as it is and return.
    Shutdown,
}

/// The sending half of the channel [`Engine::run`](super::Engine::run) reads.
pub type Sender = std::sync::mpsc::Sender<Message>;

/// A change to one kind of object, as a source reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<K> {
    /// The object was created or updated.
    Applied(K),
    /// The object was deleted (its last known state).
    Deleted(K),
    /// The complete set of objects of this kind, replacing everything known before (an initial
    /// list, a relist after the watch expired, a manifests reload).
    Reset(Vec<K>),
    /// The first list is complete: the objects applied so far are every object of this kind.
    /// A source that delivers its first list in parts (as `Applied` changes, so that the
    /// objects are stored while the rest is read) ends it with this.
    Synced,
}

impl<K> Change<K> {
    /// The same change with `f` applied to each object.
    pub fn map<T>(self, mut f: impl FnMut(K) -> T) -> Change<T> {
        match self {
            Change::Applied(k) => Change::Applied(f(k)),
            Change::Deleted(k) => Change::Deleted(f(k)),
            Change::Reset(v) => Change::Reset(v.into_iter().map(f).collect()),
            Change::Synced => Change::Synced,
        }
    }
}
