//! Where Services and EndpointSlices come from: a Kubernetes API server ([`kubernetes`]) or a
//! file or folder of manifests ([`manifests`]). Both report [`Change`]s
//! to the engine as [`Message`]s; neither touches the node.

pub mod backoff;
mod folder_tree;
mod folder_watch;
pub mod kubernetes;
pub mod manifests;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::store::Change;

/// What sources (and the signal handler) tell the engine.
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

/// The sending half the engine reads from.
pub type Sender = std::sync::mpsc::Sender<Message>;
