//! IPVS over generic netlink (crate docs are written once the API settles).

pub mod codec;
pub mod model;
pub mod transport;
