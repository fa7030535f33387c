//! ipvs-proxy against a real Kubernetes control plane: the release's kube-apiserver (RBAC on)
//! and EndpointSlice controller, built from their Go modules and started by
//! `cargo xtask control-plane-tests` (see `integration::cluster`).
//!
//! - `source`: the Kubernetes source's lists and watches, selectors, a compacted history and an
//!   API server that goes away.
//! - `chain`: a user's objects in, traffic out — the daemon in a node's namespace, its backends
//!   in pods' namespaces, real connections.
//! - `deploy`: `deploy/` as the real API server validates it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod control_plane;
