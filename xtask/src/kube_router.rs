//! The Kubernetes-mode benchmark's second peer: kube-router's service proxy, built from its Go
//! module at the version `integration/go/kube-router/go.mod` pins.
//!
//! Only `cargo xtask bench` asks for it, for the `kubernetes` part: the tests never need it.
//! Without Go the benchmark compares ipvs-proxy with kube-proxy alone and says so.

use std::path::PathBuf;

use crate::Result;
use crate::go_build::{self, GoProgram};

const KUBE_ROUTER: GoProgram = GoProgram {
    folder: "kube-router",
    module: "github.com/cloudnativelabs/kube-router/v2",
    binaries: &[(
        "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
        "kube-router",
    )],
    ldflags: version_stamp,
    why: "for the Kubernetes-mode benchmark (about 5 minutes on two cores the first time)",
};

/// What kube-router's own build stamps (its Makefile), so that it reports its release.
fn version_stamp(version: &str) -> String {
    format!("-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}")
}

/// kube-router's binary, built if the cache does not hold this version yet. `Ok(None)` when Go
/// is not installed.
pub(crate) fn ensure_built() -> Result<Option<PathBuf>> {
    go_build::optional_binary(&KUBE_ROUTER, "kube-router", "kube-router")
}
