//! The controller's runtime: the loop that turns source changes into incremental syncs,
//! usable by any program that embeds the controller.
//!
//! A program feeds [`Message`]s (Services, EndpointSlices and the Node, as [`Change`]s) into
//! a channel and runs an [`Engine`] on a thread of its own; the engine keeps the objects
//! ([`store`]), waits until every source delivered its first state, adopts the node, then
//! programs each change incrementally and verifies the whole table every sync period. What it
//! does is shown through an [`Observer`] (telemetry, health endpoints, the Services' health
//! checks).
//!
//! | file | owns |
//! | --- | --- |
//! | `engine/mod.rs` | the [`Engine`] loop: messages in, syncs out |
//! | `engine/adoption.rs` | adopting the node, and the early start of a fresh node |
//! | `engine/pacing.rs` | when full passes come and how their slices are spread |
//! | `message.rs` | [`Message`] and [`Change`]: what sources send |
//! | `store/` | the trimmed objects, indexed by Service ([`ObjectStore`]) |
//! | `observer.rs` | [`Observer`]: what the engine reports as it works |
//! | `system.rs` | CPUs, the thread's CPU time, memory given back |

pub mod engine;
mod message;
pub mod observer;
pub mod store;
pub mod system;

pub use engine::{
    DISCOVER_ALWAYS_BELOW, DISCOVER_EVERY, EARLY_SYNC_MAX, Engine, EngineConfig, FULL_PASS_SHARE,
    Flow, SWEEP_SLICE, full_pass_period,
};
pub use message::{Change, Message, Sender};
pub use observer::{EngineState, ObjectKind, Observer, Silent, SyncEnd, Work};
pub use store::{NodeFacts, ObjectKey, ObjectStore, trigger_time};
