//! Short kernel names: at most 15 bytes, no NUL, not empty.

use std::fmt;

use super::ModelError;

/// The longest name the kernel accepts for schedulers, persistence engines and sync
/// interfaces: their buffers are 16 bytes including the terminating NUL.
pub(crate) const MAX_NAME_LEN: usize = 15;

pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() {
        return Err(ModelError::EmptyName { kind });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ModelError::NameTooLong {
            kind,
            name: name.to_owned(),
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name.contains('\0') {
        return Err(ModelError::NameContainsNul {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! short_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates the name: 1 to 15 bytes, no NUL.
            pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
                let name = name.into();
                check_name($kind, &name)?;
                Ok(Self(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, ModelError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

short_name!(
    /// The name of a persistence engine (`IPVS_SVC_ATTR_PE_NAME`), e.g. `sip`. The kernel
    /// loads the module `ip_vs_pe_<name>` and answers ENOENT for an unknown one.
    PersistenceEngine,
    "persistence engine"
);

short_name!(
    /// The network interface a sync daemon sends or listens on (`IPVS_DAEMON_ATTR_MCAST_IFN`).
    InterfaceName,
    "interface"
);
