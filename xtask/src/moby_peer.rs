//! The library benchmark's moby/ipvs peer: a small Go program of the project's
//! (`integration/go/mobyipvs-peer/`), built from its Go module at the version its `go.mod` pins.
//!
//! Only `cargo xtask bench` asks for it: the tests never need it. Without Go the benchmark runs
//! without this peer and says so.

use std::path::PathBuf;

use crate::Result;
use crate::go_build::{self, GoProgram};

const PEER: GoProgram = GoProgram {
    folder: "mobyipvs-peer",
    module: "github.com/moby/ipvs",
    binaries: &[(".", "mobyipvs-peer")],
    ldflags: go_build::no_ldflags,
    why: "for the library benchmark",
};

/// The peer's binary, built if the cache does not hold this version and source yet. `Ok(None)`
/// when Go is not installed: the benchmark then runs without this peer.
pub(crate) fn ensure_built() -> Result<Option<PathBuf>> {
    go_build::optional_binary(&PEER, "mobyipvs-peer", "the moby/ipvs peer")
}
