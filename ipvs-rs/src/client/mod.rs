//! Handles on the kernel's IPVS table: [`Ipvs`] (blocking) and `AsyncIpvs` (tokio, feature
//! `tokio`), over one sans-IO description of every call.
//!
//! A handle owns one netlink socket in one network namespace, and opens a few more in the same
//! namespace for listings on first use (their replies are decoded without attribute lists).
//! Reads decode the kernel's replies into [`crate::model`] types; changes are
//! [`Operation`](crate::codec::Operation)s, checked against what the running kernel supports
//! before they are sent, applied one at a time or in batches with a result each.

mod blocking;
mod call;
mod calls;
mod error;
mod machine;
mod results;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "tokio")]
pub use self::tokio::AsyncIpvs;
pub use blocking::Ipvs;
pub use error::{Error, ErrorKind, Result};
pub use results::{BatchResults, IntoIter as BatchResultsIntoIter};
