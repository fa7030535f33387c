//! What the running kernel's IPVS understands.
//!
//! The kernel silently ignores attributes it does not know: a GUE tunnel sent to a 5.1
//! kernel becomes an IPIP tunnel, and a mixed-family destination sent to a 3.17 kernel gets
//! its service's family. Encoding therefore takes a [`KernelFeatures`] and refuses what the
//! kernel would drop. Build one from the kernel release ([`KernelFeatures::from_release`]),
//! upgrade it from what replies contain (see `crate::codec::observe_features`), or take
//! [`KernelFeatures::all`] when the kernel is known to be recent.

use std::fmt;

/// One version-dependent IPVS capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Feature {
    /// `IPVS_DEST_ATTR_ADDR_FAMILY` (3.18): destinations of another family than their service.
    DestinationAddressFamily,
    /// `IPVS_SVC_ATTR_STATS64` / `IPVS_DEST_ATTR_STATS64` (4.1): 64-bit counters.
    Stats64,
    /// Sync daemon `SYNC_MAXLEN`, `MCAST_GROUP(6)`, `MCAST_PORT`, `MCAST_TTL` (4.3).
    DaemonMulticastSettings,
    /// `IPVS_DEST_ATTR_TUN_TYPE` and `TUN_PORT`: GUE tunnels (5.2).
    TunnelGue,
    /// `IPVS_DEST_ATTR_TUN_FLAGS`: tunnel checksum flags (5.3).
    TunnelFlags,
    /// GRE tunnels (5.3).
    TunnelGre,
}

impl Feature {
    /// Every feature, oldest first.
    pub const ALL: [Feature; 6] = [
        Self::DestinationAddressFamily,
        Self::Stats64,
        Self::DaemonMulticastSettings,
        Self::TunnelGue,
        Self::TunnelFlags,
        Self::TunnelGre,
    ];

    /// The first mainline kernel with the feature.
    pub fn since(self) -> KernelVersion {
        let (major, minor) = match self {
            Self::DestinationAddressFamily => (3, 18),
            Self::Stats64 => (4, 1),
            Self::DaemonMulticastSettings => (4, 3),
            Self::TunnelGue => (5, 2),
            Self::TunnelFlags | Self::TunnelGre => (5, 3),
        };
        KernelVersion {
            major,
            minor,
            patch: 0,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::DestinationAddressFamily => 1 << 0,
            Self::Stats64 => 1 << 1,
            Self::DaemonMulticastSettings => 1 << 2,
            Self::TunnelGue => 1 << 3,
            Self::TunnelFlags => 1 << 4,
            Self::TunnelGre => 1 << 5,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::DestinationAddressFamily => {
                "mixed-family destinations (IPVS_DEST_ATTR_ADDR_FAMILY)"
            }
            Self::Stats64 => "64-bit statistics (STATS64)",
            Self::DaemonMulticastSettings => {
                "sync daemon multicast settings (SYNC_MAXLEN, MCAST_GROUP, MCAST_PORT, MCAST_TTL)"
            }
            Self::TunnelGue => "GUE tunnels (IPVS_DEST_ATTR_TUN_TYPE, TUN_PORT)",
            Self::TunnelFlags => "tunnel checksum flags (IPVS_DEST_ATTR_TUN_FLAGS)",
            Self::TunnelGre => "GRE tunnels",
        };
        write!(f, "{what}, Linux {}+", self.since())
    }
}

/// A kernel version, as `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level (0 when the release string has none).
    pub patch: u32,
}

impl KernelVersion {
    /// Parses the leading `major.minor[.patch]` of a release string such as `uname -r`
    /// prints (`6.1.0-56-amd64`, `5.4.0`, `4.18.0-553.el8_10.x86_64`, `6.8.0+`); anything
    /// after the numbers is ignored. Returns `None` when there are not at least two numbers.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.trim().splitn(3, '.');
        let major = leading_number(parts.next()?)?;
        let minor = leading_number(parts.next()?)?;
        let patch = parts.next().and_then(leading_number).unwrap_or(0);
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

/// The number made of the leading ASCII digits of `s`, if any (and if it fits in a u32).
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.patch != 0 {
            write!(f, ".{}", self.patch)?;
        }
        Ok(())
    }
}

/// The set of [`Feature`]s the running kernel supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KernelFeatures(u8);

impl KernelFeatures {
    /// What every kernel with IPVS generic netlink (2.6.28+) supports: none of the [`Feature`]s.
    pub const fn baseline() -> Self {
        Self(0)
    }

    /// Every feature (any kernel from 5.3 on).
    pub fn all() -> Self {
        Feature::ALL.into_iter().fold(Self(0), |f, x| f.with(x))
    }

    /// The features of a mainline kernel of this version.
    pub fn for_version(version: KernelVersion) -> Self {
        Feature::ALL
            .into_iter()
            .filter(|f| version >= f.since())
            .fold(Self(0), |acc, f| acc.with(f))
    }

    /// The features of the kernel with this release string (`uname -r`).
    ///
    /// An unparseable release gives the conservative [`KernelFeatures::baseline`]: encoding
    /// then refuses anything version-dependent rather than risk the kernel dropping it
    /// silently. Distribution kernels that backport features are also under-estimated;
    /// upgrade with [`KernelFeatures::with`] or from replies.
    pub fn from_release(release: &str) -> Self {
        KernelVersion::parse(release).map_or(Self::baseline(), Self::for_version)
    }

    /// Whether `feature` is supported.
    pub fn supports(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    /// These features plus `feature`.
    #[must_use]
    pub fn with(self, feature: Feature) -> Self {
        Self(self.0 | feature.bit())
    }

    /// These features plus every one of `other`.
    #[must_use]
    pub fn with_all(self, other: KernelFeatures) -> Self {
        Self(self.0 | other.0)
    }

    /// These features minus `feature`.
    #[must_use]
    pub fn without(self, feature: Feature) -> Self {
        Self(self.0 & !feature.bit())
    }

    /// The supported features, oldest first.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.supports(*f))
    }
}
