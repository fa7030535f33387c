//! The errors of IPVS calls, in the terms of the operation that failed.

use std::io;

use crate::codec::{DecodeError, EncodeError};
use crate::transport::{KernelError, TransportError};

/// What went wrong, independent of the layer that noticed it. Match on this; the [`Error`]
/// variants say where it happened and keep the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service or destination already exists (`EEXIST`).
    AlreadyExists,
    /// The service, destination, scheduler or persistence engine does not exist
    /// (`ESRCH`, `ENOENT`).
    NotFound,
    /// The kernel has no IPVS: the module is not loaded and could not be loaded.
    ModuleMissing,
    /// The caller lacks CAP_NET_ADMIN (in the initial user namespace) (`EPERM`, `EACCES`).
    PermissionDenied,
    /// The running kernel does not support this: refused before sending, or `EOPNOTSUPP`.
    Unsupported,
    /// A value the kernel (or this library) rejects (`EINVAL`, `ERANGE`).
    InvalidArgument,
    /// Another dump is running on the socket, or the resource is busy (`EBUSY`).
    Busy,
    /// No complete answer before the deadline.
    TimedOut,
    /// A reply was larger than the receive buffer.
    Truncated,
    /// The receive queue overflowed and replies were lost.
    Overrun,
    /// The table changed during a dump; the listing may be inconsistent.
    Inconsistent,
    /// Anything else: an I/O error, a protocol violation, an undecodable reply, an unusual errno.
    Other,
}

/// The error of an IPVS call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel has no `IPVS` generic-netlink family.
    #[error(
        "IPVS is not available: the kernel has no IPVS generic netlink family \
         (load the ip_vs module, or use a kernel built with CONFIG_IP_VS)"
    )]
    ModuleMissing,
    /// The kernel refused the operation.
    #[error("{operation}: {reason}")]
    Rejected {
        /// What was being done, e.g. `add service TCP 10.0.0.1:80`.
        operation: String,
        /// The errno explained in the operation's terms.
        reason: String,
        /// The classification of the errno.
        kind: ErrorKind,
        /// The kernel's answer: errno and extended-ACK message.
        #[source]
        source: KernelError,
    },
    /// The operation was refused before it was sent: invalid, or unsupported by this kernel.
    #[error("{operation}: not sent")]
    Encode {
        /// What was being done.
        operation: String,
        /// Why it could not be encoded.
        #[source]
        source: EncodeError,
    },
    /// A reply of the kernel could not be decoded.
    #[error("{operation}: the kernel's reply could not be decoded")]
    Decode {
        /// What was being done.
        operation: String,
        /// The decoder's error.
        #[source]
        source: DecodeError,
    },
    /// The netlink conversation failed (I/O, deadline, truncation, overrun, protocol).
    #[error("{operation}: {source}")]
    Transport {
        /// What was being done.
        operation: String,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
}

/// The result of IPVS calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong, for matching.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ModuleMissing => ErrorKind::ModuleMissing,
            Error::Rejected { kind, .. } => *kind,
            Error::Encode { source, .. } => match source {
                EncodeError::Unsupported { .. } => ErrorKind::Unsupported,
                _ => ErrorKind::InvalidArgument,
            },
            Error::Decode { .. } => ErrorKind::Other,
            Error::Transport { source, .. } => match source {
                TransportError::FamilyNotFound { .. } => ErrorKind::ModuleMissing,
                TransportError::Kernel(e) => classify(e.errno()),
                TransportError::Timeout { .. } => ErrorKind::TimedOut,
                TransportError::Truncated { .. } => ErrorKind::Truncated,
                TransportError::Overrun => ErrorKind::Overrun,
                TransportError::DumpInterrupted => ErrorKind::Inconsistent,
                TransportError::Io { source, .. }
                    if source.kind() == io::ErrorKind::PermissionDenied =>
                {
                    ErrorKind::PermissionDenied
                }
                _ => ErrorKind::Other,
            },
        }
    }

    /// The raw errno the kernel answered, when it answered one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Rejected { source, .. } => Some(source.errno()),
            Error::Transport { source, .. } => source.kernel_errno(),
            _ => None,
        }
    }

    /// Wraps a transport error met while doing `operation`.
    pub(crate) fn transport(operation: impl Into<String>, source: TransportError) -> Self {
        match source {
            TransportError::FamilyNotFound { .. } => Error::ModuleMissing,
            TransportError::Kernel(e) => Error::rejected(operation, e),
            source => Error::Transport {
                operation: operation.into(),
                source,
            },
        }
    }

    /// Wraps the kernel's refusal of `operation`.
    pub(crate) fn rejected(operation: impl Into<String>, source: KernelError) -> Self {
        let operation = operation.into();
        let kind = classify(source.errno());
        let mut reason = explain(&operation, source.errno(), kind);
        if let Some(message) = source.message() {
            reason = format!("{reason}; the kernel says: {message}");
        }
        Error::Rejected {
            operation,
            reason,
            kind,
            source,
        }
    }
}

/// Classifies an errno.
fn classify(errno: i32) -> ErrorKind {
    match errno {
        libc_errno::EEXIST => ErrorKind::AlreadyExists,
        libc_errno::ESRCH | libc_errno::ENOENT => ErrorKind::NotFound,
        libc_errno::EPERM | libc_errno::EACCES => ErrorKind::PermissionDenied,
        libc_errno::EOPNOTSUPP | libc_errno::EAFNOSUPPORT => ErrorKind::Unsupported,
        libc_errno::EINVAL | libc_errno::ERANGE => ErrorKind::InvalidArgument,
        libc_errno::EBUSY => ErrorKind::Busy,
        _ => ErrorKind::Other,
    }
}

/// Says what an errno means for the operation that got it.
fn explain(operation: &str, errno: i32, kind: ErrorKind) -> String {
    let what = if operation.contains("destination") {
        "destination"
    } else {
        "service"
    };
    let adding = operation.starts_with("add");
    let text = match (kind, errno) {
        (ErrorKind::AlreadyExists, _) => format!("the {what} already exists"),
        (ErrorKind::NotFound, libc_errno::ENOENT) if adding && what == "service" => {
            "the scheduler or persistence engine is not available in this kernel".to_string()
        }
        (ErrorKind::NotFound, _) if what == "destination" && adding => {
            "the service does not exist".to_string()
        }
        (ErrorKind::NotFound, _) => format!("the {what} does not exist"),
        (ErrorKind::PermissionDenied, _) => {
            "permission denied: IPVS needs CAP_NET_ADMIN in the initial user namespace".to_string()
        }
        (ErrorKind::Unsupported, _) => "not supported by this kernel".to_string(),
        (ErrorKind::InvalidArgument, libc_errno::ERANGE) => {
            "a value is out of range (weight above 2^31-1, or lower threshold above upper)"
                .to_string()
        }
        (ErrorKind::InvalidArgument, _) => "the kernel rejected a value as invalid".to_string(),
        (ErrorKind::Busy, _) => "busy: another dump is running on this socket".to_string(),
        _ => "the kernel refused it".to_string(),
    };
    format!("{text} ({})", io::Error::from_raw_os_error(errno))
}

/// The errno values this module names (Linux, all architectures this crate supports).
mod libc_errno {
    pub(super) const EPERM: i32 = 1;
    pub(super) const ENOENT: i32 = 2;
    pub(super) const ESRCH: i32 = 3;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EBUSY: i32 = 16;
    pub(super) const EEXIST: i32 = 17;
    pub(super) const EINVAL: i32 = 22;
    pub(super) const ERANGE: i32 = 34;
    pub(super) const EAFNOSUPPORT: i32 = 97;
    pub(super) const EOPNOTSUPP: i32 = 95;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_speak_in_the_operations_terms() {
        let e = Error::rejected("add service TCP 10.0.0.1:80", KernelError::new(17));
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(e.errno(), Some(17));
        assert!(e.to_string().contains("the service already exists"), "{e}");

        let e = Error::rejected("add service TCP 10.0.0.1:80", KernelError::new(2));
        assert!(e.to_string().contains("scheduler"), "{e}");

        let e = Error::rejected(
            "delete destination 10.0.0.2:80 of TCP 10.0.0.1:80",
            KernelError::new(2),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.to_string().contains("the destination does not exist"),
            "{e}"
        );

        let e = Error::transport(
            "list services",
            TransportError::FamilyNotFound {
                name: "IPVS".into(),
            },
        );
        assert_eq!(e.kind(), ErrorKind::ModuleMissing);

        let e = Error::rejected("edit destination", KernelError::new(34).with_message("bad"));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("the kernel says: bad"), "{e}");
    }
}
