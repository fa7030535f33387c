//! Errors of the netlink transport.
//!
//! Two levels are kept apart:
//!
//! * [`KernelError`] is the kernel's answer to *one* request: an `NLMSG_ERROR` with a
//!   negative errno (or an `NLMSG_DONE` closing a dump with one), plus the extended-ACK
//!   text and offset when the kernel provided them. In a batch every request gets its own
//!   `Result<_, KernelError>`; one rejected request does not fail the others.
//! * [`TransportError`] is everything else that makes a call fail as a whole: I/O, a
//!   deadline, a truncated or undecodable datagram, a dropped reply (`ENOBUFS`), …

use std::{fmt, io, time::Duration};

use netlink_packet_core::DecodeError;

/// The kernel rejected one request: the errno of its `NLMSG_ERROR` (or of the
/// `NLMSG_DONE` that closed a failed dump) and the extended-ACK details, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    errno: i32,
    message: Option<String>,
    offset: Option<u32>,
}

impl KernelError {
    /// An error with this (positive) errno and no extended-ACK details.
    pub fn new(errno: i32) -> Self {
        Self {
            errno,
            message: None,
            offset: None,
        }
    }

    /// Builds an error from the raw `error` field of an `NLMSG_ERROR` (a negative
    /// errno; a few subsystems send it positive, both are accepted).
    pub(crate) fn from_raw_code(code: i32) -> Self {
        Self::new(code.saturating_abs())
    }

    /// Attaches the extended-ACK message (`NLMSGERR_ATTR_MSG`).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Attaches the extended-ACK offset (`NLMSGERR_ATTR_OFFS`).
    pub fn with_offset(mut self, offset: u32) -> Self {
        self.offset = Some(offset);
        self
    }

    /// The errno as a positive number, exactly as the kernel sent it (e.g. `libc::ENOENT`).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The kernel's extended-ACK message (`NLMSGERR_ATTR_MSG`), when it sent one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The extended-ACK offset (`NLMSGERR_ATTR_OFFS`): the byte offset, from the start of
    /// the request's netlink header, of the attribute the kernel objected to.
    pub fn offset(&self) -> Option<u32> {
        self.offset
    }

    /// This error as a [`std::io::Error`] carrying the raw OS error code; the
    /// extended-ACK message, if any, is lost (use [`From`] to keep it).
    pub fn to_io_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset} of the request)")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

impl From<KernelError> for io::Error {
    /// Keeps the errno as the raw OS error when there is no extended-ACK message;
    /// otherwise wraps the whole error (kind derived from the errno) so the message survives.
    fn from(error: KernelError) -> Self {
        if error.message.is_none() && error.offset.is_none() {
            error.to_io_error()
        } else {
            io::Error::new(error.to_io_error().kind(), error)
        }
    }
}

/// Why a transport call failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A socket system call (or opening a namespace) failed.
    #[error("netlink {operation} failed")]
    Io {
        /// The failing operation, e.g. `"send"`, `"recv"`, `"setns"`.
        operation: &'static str,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The generic-netlink family is not registered in the kernel (the controller
    /// answered `ENOENT` to `CTRL_CMD_GETFAMILY`); for IPVS: the module is not loaded.
    #[error("generic netlink family {name:?} not found")]
    FamilyNotFound {
        /// The family name that was looked up.
        name: String,
    },
    /// The kernel rejected the request.
    #[error("kernel rejected the request")]
    Kernel(#[source] KernelError),
    /// The kernel stayed silent for the whole timeout before every reply arrived. The
    /// connection stays usable: late replies are recognised by sequence number and
    /// discarded.
    #[error(
        "no complete answer from the kernel within {timeout:?} ({pending} request(s) unanswered)"
    )]
    Timeout {
        /// The deadline that applied to the call (or to the batch chunk).
        timeout: Duration,
        /// How many requests had not completed.
        pending: usize,
    },
    /// A datagram was larger than the receive buffer; its tail was lost. The buffer
    /// has been grown, so a retry can succeed.
    #[error("netlink datagram of {len} bytes truncated to the {capacity}-byte receive buffer")]
    Truncated {
        /// The datagram's real length.
        len: usize,
        /// The receive buffer's capacity at the time.
        capacity: usize,
    },
    /// A dump reply carried `NLM_F_DUMP_INTR`: the object set changed while it was being
    /// dumped, so the result may be inconsistent. Retrying the dump is the usual answer.
    #[error("dump interrupted: the kernel's data changed during the dump (NLM_F_DUMP_INTR)")]
    DumpInterrupted,
    /// The socket's receive queue overflowed (`ENOBUFS` or `NLMSG_OVERRUN`): the kernel
    /// dropped replies, so the outcome of the in-flight requests is unknown.
    #[error("netlink receive queue overrun (ENOBUFS): replies were dropped")]
    Overrun,
    /// A message could not be decoded.
    #[error("could not decode a netlink message: {description}")]
    Decode {
        /// What was being decoded and why it failed.
        description: String,
        /// The decoder's error, when there was one.
        #[source]
        source: Option<DecodeError>,
    },
    /// The peer broke the protocol: an unexpected message type, sequence number or port id.
    #[error("netlink protocol violation: {description}")]
    Protocol {
        /// What was unexpected.
        description: String,
    },
}

impl TransportError {
    /// The kernel's errno when this is a [`TransportError::Kernel`] error.
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            Self::Kernel(error) => Some(error.errno()),
            _ => None,
        }
    }

    pub(crate) fn io(operation: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io {
            operation,
            source: source.into(),
        }
    }

    pub(crate) fn decode(description: impl Into<String>, source: Option<DecodeError>) -> Self {
        Self::Decode {
            description: description.into(),
            source,
        }
    }

    pub(crate) fn protocol(description: impl Into<String>) -> Self {
        Self::Protocol {
            description: description.into(),
        }
    }
}

impl From<KernelError> for TransportError {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

impl From<TransportError> for io::Error {
    /// Maps kernel errors to their errno, I/O errors to themselves, deadlines to
    /// `TimedOut` and everything else to a descriptive error of a fitting kind.
    fn from(error: TransportError) -> Self {
        let kind = match &error {
            TransportError::Kernel(kernel) => return kernel.clone().into(),
            TransportError::Io { source, .. } => source.kind(),
            TransportError::FamilyNotFound { .. } => io::ErrorKind::NotFound,
            TransportError::Timeout { .. } => io::ErrorKind::TimedOut,
            TransportError::Overrun => io::ErrorKind::OutOfMemory,
            TransportError::Decode { .. }
            | TransportError::Protocol { .. }
            | TransportError::Truncated { .. } => io::ErrorKind::InvalidData,
            TransportError::DumpInterrupted => io::ErrorKind::Interrupted,
        };
        io::Error::new(kind, error)
    }
}

/// The transport's result type.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_carries_errno_and_ext_ack() {
        let e = KernelError::from_raw_code(-2)
            .with_message("no such thing")
            .with_offset(20);
        assert_eq!(e.errno(), 2);
        assert_eq!(e.message(), Some("no such thing"));
        assert_eq!(e.offset(), Some(20));
        assert!(e.to_string().contains("no such thing"));
        assert_eq!(e.to_io_error().raw_os_error(), Some(2));
        let io: io::Error = KernelError::new(17).into();
        assert_eq!(io.raw_os_error(), Some(17));
        assert_eq!(KernelError::from_raw_code(i32::MIN).errno(), i32::MAX);
    }

    #[test]
    fn transport_error_to_io() {
        let io: io::Error = TransportError::Kernel(KernelError::new(1)).into();
        assert_eq!(io.raw_os_error(), Some(1));
        let io: io::Error = TransportError::Timeout {
            timeout: Duration::ZERO,
            pending: 1,
        }
        .into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    }
}
