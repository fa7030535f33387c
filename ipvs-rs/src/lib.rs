//! IPVS over generic netlink (crate docs are written once the API settles).

pub mod client;
pub mod codec;
pub mod model;
pub mod table;
pub mod transport;

#[cfg(feature = "tokio")]
pub use client::AsyncIpvs;
pub use client::{Error, ErrorKind, Ipvs, Result};
