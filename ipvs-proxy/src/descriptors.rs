//! File descriptors: the limit the daemon raises at start, and the share of it that the HTTP
//! endpoints may hold.
//!
//! Every TCP connection to `/metrics`, `/healthz` or a health check node port holds one
//! descriptor; so do the daemon's own sockets and files (its netlink sockets, the manifests it
//! reads, the sysctl files it holds, the API server connection). Left to the C library's usual
//! soft limit of 1,024, a flood of idle connections could take them all and stop the daemon's
//! own work. So [`raise_limit`] lifts the soft limit to the hard one at start (as most servers
//! do: the hard limit is what the operator allows), and the HTTP endpoints together may hold at
//! most [`http_connections`] of it, half: the other half stays for the daemon's own work.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tracing::{info, warn};

/// A soft limit below this is logged as a warning at start: the HTTP endpoints' half of it
/// would leave them few connections, and a large manifests folder or cluster little room.
pub const LOW_LIMIT: u64 = 4096;

/// The descriptor limit in force after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit now in force (`RLIMIT_NOFILE`'s current value).
    pub soft: u64,
    /// The hard limit (the most the soft limit may be raised to without privilege).
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

impl Limit {
    /// Whether the soft limit is below [`LOW_LIMIT`].
    pub fn is_low(&self) -> bool {
        self.soft < LOW_LIMIT
    }
}

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// `getrlimit` failed.
    #[error("cannot read the file descriptor limit: {0}")]
    Read(#[source] nix::Error),
    /// `setrlimit` failed (the soft limit stays `soft`).
    #[error("cannot raise the file descriptor limit from {soft} to {wanted}: {source}")]
    Raise {
        /// The soft limit in force.
        soft: u64,
        /// The limit asked for.
        wanted: u64,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, or to the kernel's `fs.nr_open` where
/// the hard limit is higher (no process may have more descriptors than that, and asking for
/// more fails). Returns the limit then in force.
pub fn raise_limit() -> Result<Limit, LimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitError::Read)?;
    let wanted = match nr_open() {
        Some(nr_open) => hard.min(nr_open),
        None => hard,
    };
    if soft >= wanted {
        return Ok(Limit {
            soft,
            hard,
            raised_from: None,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(|source| LimitError::Raise {
        soft,
        wanted,
        source,
    })?;
    Ok(Limit {
        soft: wanted,
        hard,
        raised_from: Some(soft),
    })
}

/// [`raise_limit`], saying in the log what limit is in force, with a warning when it cannot be
/// raised or stays below [`LOW_LIMIT`]. The daemon's start-up runs it first.
pub fn raise_limit_at_start() {
    let limit = match raise_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "file descriptor limit left as it is");
            match getrlimit(Resource::RLIMIT_NOFILE) {
                Ok((soft, hard)) => Limit {
                    soft,
                    hard,
                    raised_from: None,
                },
                Err(_) => return,
            }
        }
    };
    if limit.is_low() {
        warn!(
            soft = limit.soft,
            hard = limit.hard,
            http_connections = http_connections(limit.soft),
            "the file descriptor limit is low: raise the hard limit (LimitNOFILE= in a systemd \
             unit, the container runtime's nofile ulimit) to {LOW_LIMIT} or more"
        );
    } else {
        info!(
            soft = limit.soft,
            hard = limit.hard,
            raised_from = limit.raised_from,
            http_connections = http_connections(limit.soft),
            "file descriptor limit"
        );
    }
}

/// The soft descriptor limit in force (`None` when it cannot be read).
pub fn current_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The kernel's ceiling on any process's descriptors (`fs.nr_open`).
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many connections the HTTP endpoints may hold together under a soft limit of `limit`
/// descriptors: half of it (at least one). The other half is kept for the daemon's own work.
pub fn http_connections(limit: u64) -> usize {
    usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let target = nr_open().map_or(hard, |n| hard.min(n));
        // Lowered a little below what raising gives (harmless to the tests running beside),
        // so that the call has something to do.
        let lowered = soft.min(target.saturating_sub(1));
        setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
        let limit = raise_limit().unwrap();
        let (now, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(now, target);
        assert_eq!(limit.soft, target);
        assert_eq!(limit.hard, hard);
        assert_eq!(limit.raised_from, (lowered < target).then_some(lowered));
        assert_eq!(current_limit(), Some(target));
    }

    #[test]
    fn the_http_endpoints_get_half_the_limit() {
        assert_eq!(http_connections(1024), 512);
        assert_eq!(http_connections(1_048_576), 524_288);
        assert_eq!(http_connections(1), 1);
        assert!(
            Limit {
                soft: 1024,
                hard: 1024,
                raised_from: None
            }
            .is_low()
        );
    }
}
