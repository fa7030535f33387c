//! Shared pieces of the example programs: printing what happened, and checking it.
//!
//! Each example builds a small network from namespaces and veth pairs (see
//! [`integration::topology`]), drives IPVS, sends real traffic and prints an account of where it
//! went. It exits non-zero when what it shows did not happen, so the test suite runs them too.

pub mod listing;

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A failed expectation of an example, with what was seen.
#[derive(Debug)]
pub struct Unexpected(pub String);

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unexpected {}

/// Checks `condition`, or fails with `message`.
pub fn expect(condition: bool, message: impl Into<String>) -> Result<(), Unexpected> {
    if condition {
        Ok(())
    } else {
        Err(Unexpected(message.into()))
    }
}

/// Renders connection counts per backend as a small table with bars.
pub fn render_tally(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    let mut out = String::new();
    let _ = writeln!(out, "  {:<24} {:>11}", "backend", "connections");
    for (backend, n) in counts {
        let bar = "#".repeat(n * 40 / total.max(1));
        let _ = writeln!(out, "  {backend:<24} {n:>11}  {bar}");
    }
    let _ = write!(out, "  {:<24} {total:>11}", "total");
    out
}
