//! Errors raised by the validating constructors of the model.

use thiserror::Error;

/// A value refused by a model constructor because the kernel would refuse or misread it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A destination weight above `i32::MAX` (the kernel stores it in an `int` and answers ERANGE).
    #[error("weight {0} is above the kernel's maximum of {max}", max = i32::MAX)]
    WeightTooLarge(u32),
    /// A lower connection threshold above the upper one (the kernel answers ERANGE, even when
    /// the upper threshold is 0, "no limit").
    #[error("lower threshold {lower} is above upper threshold {upper}")]
    LowerThresholdAboveUpper {
        /// The requested lower threshold.
        lower: u32,
        /// The requested upper threshold.
        upper: u32,
    },
    /// A name (scheduler, persistence engine, interface) longer than the kernel's 15 bytes.
    #[error("{kind} name {name:?} is {len} bytes long; the kernel accepts at most {max}")]
    NameTooLong {
        /// What the name is for ("scheduler", "persistence engine", "interface").
        kind: &'static str,
        /// The refused name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The longest length accepted.
        max: usize,
    },
    /// An empty name where the kernel needs one.
    #[error("{kind} name is empty")]
    EmptyName {
        /// What the name is for.
        kind: &'static str,
    },
    /// A name containing a NUL byte, which would cut it short on the wire.
    #[error("{kind} name {name:?} contains a NUL byte")]
    NameContainsNul {
        /// What the name is for.
        kind: &'static str,
        /// The refused name.
        name: String,
    },
    /// A custom scheduler named after an in-tree scheduler: use the matching [`crate::model::Scheduler`] variant.
    #[error("{0:?} is an in-tree scheduler; use its Scheduler variant instead of Other")]
    InTreeSchedulerName(String),
    /// Scheduler flag bits outside SCHED1..SCHED3 (0x08 | 0x10 | 0x20).
    #[error("scheduler flags {0:#x} are outside SCHED1..SCHED3 (0x38)")]
    InvalidSchedulerFlags(u32),
    /// An IPv6 persistence prefix length outside 1..=128 (the kernel answers EINVAL).
    #[error("IPv6 persistence prefix length {0} is outside 1..=128")]
    InvalidPrefixLength(u8),
}
