//! Schedulers: how a service picks a destination for a new connection.

use std::fmt;
use std::str::FromStr;

use super::ModelError;
use super::name::check_name;

/// Service flag `IP_VS_SVC_F_SCHED1` (for `sh` and `mh`: fall back to another destination
/// when the chosen one is unavailable).
pub(crate) const SCHED1: u32 = 0x08;
/// Service flag `IP_VS_SVC_F_SCHED2` (for `sh` and `mh`: hash the source port too).
pub(crate) const SCHED2: u32 = 0x10;
/// Service flag `IP_VS_SVC_F_SCHED3`.
pub(crate) const SCHED3: u32 = 0x20;
/// All scheduler-owned service flags.
pub(crate) const SCHED_MASK: u32 = SCHED1 | SCHED2 | SCHED3;

/// The scheduler of a virtual service (`IPVS_SVC_ATTR_SCHED_NAME`, with the scheduler flags
/// SCHED1..SCHED3 of `IPVS_SVC_ATTR_FLAGS`).
///
/// Every in-tree scheduler has a variant. The kernel loads `ip_vs_<name>` on demand and
/// answers ENOENT for a name it cannot load. `sh` and `mh` read two service flags, typed here
/// as `fallback` (SCHED1) and `port` (SCHED2). [`Scheduler::None`] (`"none"`) is valid since
/// the scheduler became optional (useful with a persistence engine). An out-of-tree scheduler
/// is a [`CustomScheduler`], which may carry raw SCHED1..SCHED3 bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// `rr`: round robin.
    RoundRobin,
    /// `wrr`: weighted round robin.
    WeightedRoundRobin,
    /// `lc`: least connection.
    LeastConnection,
    /// `wlc`: weighted least connection (the kernel's and ipvsadm's default).
    WeightedLeastConnection,
    /// `lblc`: locality-based least connection.
    LocalityBasedLeastConnection,
    /// `lblcr`: locality-based least connection with replication.
    LocalityBasedLeastConnectionReplication,
    /// `dh`: destination hashing.
    DestinationHashing,
    /// `sh`: source hashing.
    SourceHashing {
        /// SCHED1: when the hashed destination is unavailable, pick another one.
        fallback: bool,
        /// SCHED2: include the source port in the hash.
        port: bool,
    },
    /// `sed`: shortest expected delay.
    ShortestExpectedDelay,
    /// `nq`: never queue.
    NeverQueue,
    /// `fo`: weighted failover.
    WeightedFailover,
    /// `ovf`: weighted overflow.
    WeightedOverflow,
    /// `mh`: Maglev hashing.
    MaglevHashing {
        /// SCHED1: when the hashed destination is unavailable, pick another one.
        fallback: bool,
        /// SCHED2: include the source port in the hash.
        port: bool,
    },
    /// `twos`: weighted random twos choice.
    TwoChoice,
    /// `none`: no scheduler.
    None,
    /// A scheduler that is not in the kernel tree (boxed: it is rare, and its name would
    /// otherwise make every service entry of a large table twice as large here).
    Other(Box<CustomScheduler>),
}

/// An out-of-tree scheduler: its name (1–15 bytes, no NUL, not an in-tree name) and the
/// scheduler flag bits (SCHED1..SCHED3) it reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomScheduler {
    name: String,
    flags: u32,
}

impl CustomScheduler {
    /// Validates `name` and `flags` (a subset of `0x08 | 0x10 | 0x20`).
    pub fn new(name: impl Into<String>, flags: u32) -> Result<Self, ModelError> {
        let name = name.into();
        check_name("scheduler", &name)?;
        if IN_TREE.iter().any(|(n, _)| *n == name) {
            return Err(ModelError::InTreeSchedulerName(name));
        }
        if flags & !SCHED_MASK != 0 {
            return Err(ModelError::InvalidSchedulerFlags(flags));
        }
        Ok(Self { name, flags })
    }

    /// The scheduler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SCHED1..SCHED3 bits sent with it.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// In-tree names that take no flags, with their variants.
const IN_TREE: &[(&str, Option<Scheduler>)] = &[
    ("rr", Some(Scheduler::RoundRobin)),
    ("wrr", Some(Scheduler::WeightedRoundRobin)),
    ("lc", Some(Scheduler::LeastConnection)),
    ("wlc", Some(Scheduler::WeightedLeastConnection)),
    ("lblc", Some(Scheduler::LocalityBasedLeastConnection)),
    (
        "lblcr",
        Some(Scheduler::LocalityBasedLeastConnectionReplication),
    ),
    ("dh", Some(Scheduler::DestinationHashing)),
    ("sh", None),
    ("sed", Some(Scheduler::ShortestExpectedDelay)),
    ("nq", Some(Scheduler::NeverQueue)),
    ("fo", Some(Scheduler::WeightedFailover)),
    ("ovf", Some(Scheduler::WeightedOverflow)),
    ("mh", None),
    ("twos", Some(Scheduler::TwoChoice)),
    ("none", Some(Scheduler::None)),
];

impl Scheduler {
    /// The kernel's name for the scheduler, as sent in `IPVS_SVC_ATTR_SCHED_NAME`.
    pub fn name(&self) -> &str {
        match self {
            Self::RoundRobin => "rr",
            Self::WeightedRoundRobin => "wrr",
            Self::LeastConnection => "lc",
            Self::WeightedLeastConnection => "wlc",
            Self::LocalityBasedLeastConnection => "lblc",
            Self::LocalityBasedLeastConnectionReplication => "lblcr",
            Self::DestinationHashing => "dh",
            Self::SourceHashing { .. } => "sh",
            Self::ShortestExpectedDelay => "sed",
            Self::NeverQueue => "nq",
            Self::WeightedFailover => "fo",
            Self::WeightedOverflow => "ovf",
            Self::MaglevHashing { .. } => "mh",
            Self::TwoChoice => "twos",
            Self::None => "none",
            Self::Other(c) => c.name(),
        }
    }

    /// The scheduler flag bits (SCHED1..SCHED3) of the service flags.
    pub fn flags(&self) -> u32 {
        match self {
            Self::SourceHashing { fallback, port } | Self::MaglevHashing { fallback, port } => {
                (if *fallback { SCHED1 } else { 0 }) | (if *port { SCHED2 } else { 0 })
            }
            Self::Other(c) => c.flags(),
            _ => 0,
        }
    }

    /// The scheduler for a kernel name and the service flags reported with it; flag bits
    /// the scheduler does not read are dropped.
    pub fn from_name_and_flags(name: &str, flags: u32) -> Result<Self, ModelError> {
        let fallback = flags & SCHED1 != 0;
        let port = flags & SCHED2 != 0;
        match name {
            "sh" => return Ok(Self::SourceHashing { fallback, port }),
            "mh" => return Ok(Self::MaglevHashing { fallback, port }),
            _ => {}
        }
        if let Some((_, Some(s))) = IN_TREE.iter().find(|(n, _)| *n == name) {
            return Ok(s.clone());
        }
        CustomScheduler::new(name, flags & SCHED_MASK).map(|c| Self::Other(Box::new(c)))
    }
}

impl Default for Scheduler {
    /// `wlc`, the default of the kernel and of ipvsadm.
    fn default() -> Self {
        Self::WeightedLeastConnection
    }
}

impl FromStr for Scheduler {
    type Err = ModelError;

    /// Parses a kernel scheduler name; flags start cleared.
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::from_name_and_flags(s, 0)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
