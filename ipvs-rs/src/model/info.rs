//! General information about the IPVS module (`IPVS_CMD_GET_INFO`).

use std::fmt;

/// The IPVS version, encoded by the kernel as `0x00MMmmpp` (e.g. `0x010201` is 1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Patch level.
    pub patch: u8,
}

impl Version {
    /// Decodes the kernel's `IPVS_INFO_ATTR_VERSION` value (bits above 24 are ignored).
    pub fn from_code(code: u32) -> Self {
        let [_, major, minor, patch] = code.to_be_bytes();
        Self {
            major,
            minor,
            patch,
        }
    }

    /// The kernel's encoding of this version.
    pub fn code(self) -> u32 {
        u32::from_be_bytes([0, self.major, self.minor, self.patch])
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `IPVS_CMD_GET_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Info {
    /// The IPVS version.
    pub version: Version,
    /// The number of buckets of the connection hash table (the `conn_tab_bits` module parameter).
    pub connection_table_size: u32,
}
