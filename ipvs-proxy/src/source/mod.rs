//! Where Services and EndpointSlices come from: a Kubernetes API server ([`kubernetes`]) or a
//! file or folder of manifests ([`manifests`]). Both report
//! [`Change`](svc_controller::runtime::Change)s to the engine as
//! [`Message`](svc_controller::runtime::Message)s; neither touches the node.

pub mod backoff;
mod folder_tree;
mod folder_watch;
pub mod kubernetes;
pub mod manifests;
pub mod priority;
