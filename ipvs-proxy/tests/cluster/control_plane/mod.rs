//! The control-plane tests (ignored by `cargo test`: they need the control plane that
//! `cargo xtask control-plane-tests` starts).

mod chain;
mod deploy;
mod harness;
mod reference;
mod source;
