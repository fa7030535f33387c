//! The schedulers this controller sends: the kernel's in-tree set, by name.
//!
//! Scheduler names are open strings in the kernel's API, and the library's [`Scheduler`] can
//! carry an out-of-tree one ([`Scheduler::Other`]). This controller sends in-tree names only,
//! so that a typo in an annotation, a flag or a config file is reported where it was written
//! instead of failing later with `ENOENT` when the kernel cannot load `ip_vs_<name>`.

use ipvs::model::Scheduler;

/// The names of the kernel's in-tree schedulers, the ones [`in_tree`] accepts.
pub const IN_TREE_NAMES: [&str; 15] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
    "none",
];

/// The scheduler of a virtual server when nothing names one: `rr`, as kube-proxy's IPVS mode
/// (the kernel's and ipvsadm's own default is `wlc`).
pub const KUBE_PROXY_DEFAULT: Scheduler = Scheduler::RoundRobin;

/// A scheduler name outside the kernel's in-tree set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {0:?} (in-tree: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos none)"
)]
pub struct UnknownScheduler(pub String);

/// Parses an in-tree scheduler name, exactly (lower case, no surrounding spaces). `sh` and
/// `mh` come with their flags off (no fallback, no port hashing), as kube-proxy sends them.
pub fn in_tree(name: &str) -> Result<Scheduler, UnknownScheduler> {
    match Scheduler::from_name_and_flags(name, 0) {
        Ok(Scheduler::Other(_)) | Err(_) => Err(UnknownScheduler(name.to_owned())),
        Ok(scheduler) => Ok(scheduler),
    }
}

/// Serde for a scheduler field written as its name, in-tree names only.
pub(crate) mod by_name {
    use ipvs::model::Scheduler;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(s: &Scheduler, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(s.name())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Scheduler, D::Error> {
        let name = String::deserialize(input)?;
        super::in_tree(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_in_tree_name_round_trips_and_nothing_else_parses() {
        for name in IN_TREE_NAMES {
            let scheduler = in_tree(name).expect("in-tree name");
            assert_eq!(scheduler.name(), name);
            assert_eq!(scheduler.flags(), 0, "{name}: flags off");
        }
        for bad in [
            "RR",
            "",
            " rr",
            "maglev",
            "rr\0",
            "a-very-long-scheduler-name",
        ] {
            assert_eq!(
                in_tree(bad),
                Err(UnknownScheduler(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
