//! Operations: everything a caller can ask the kernel to change, and the read requests.

use super::command::CommandAttribute;
use super::config::decode_timeout_attributes;
use super::config::timeout_attributes;
use super::daemon::decode_daemon_attributes;
use super::daemon::{DaemonAttribute, daemon_attributes};
use super::destination::{decode_destination_key, decode_destination_nest};
use super::destination::{destination_attributes, destination_key_attributes};
use super::message::{IpvsCommand, IpvsMessage};
use super::service::{decode_service_key, decode_service_nest};
use super::service::{service_attributes, service_key_attributes};
use super::{DecodeError, EncodeError};
use crate::model::{
    DaemonState, Destination, DestinationKey, KernelFeatures, Service, ServiceKey, SyncDaemon,
    Timeouts,
};

/// A change to the kernel's IPVS state.
///
/// Each operation is one request message; send it with `NLM_F_REQUEST | NLM_F_ACK` (without
/// the ACK, a request that produces no reply leaves the reader waiting forever). The kernel
/// applies messages in order and has no transactions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Add a service (EEXIST if it exists).
    AddService(Service),
    /// Replace every setting of an existing service (ESRCH if missing).
    EditService(Service),
    /// Delete a service and its destinations (ESRCH if missing).
    DeleteService(ServiceKey),
    /// Add a destination to a service (EEXIST if it exists).
    AddDestination(ServiceKey, Destination),
    /// Replace the settings of a destination (ENOENT if missing).
    EditDestination(ServiceKey, Destination),
    /// Delete a destination (ENOENT if missing).
    DeleteDestination(ServiceKey, DestinationKey),
    /// Delete every service.
    Flush,
    /// Zero the counters of one service, or of all with `None`.
    ZeroCounters(Option<ServiceKey>),
    /// Set the connection timeouts that are `Some`.
    SetTimeouts(Timeouts),
    /// Start a sync daemon.
    StartDaemon(SyncDaemon),
    /// Stop the sync daemon of a role.
    StopDaemon(DaemonState),
}

impl Operation {
    /// The command this operation is sent as.
    pub fn command(&self) -> IpvsCommand {
        match self {
            Self::AddService(_) => IpvsCommand::NewService,
            Self::EditService(_) => IpvsCommand::SetService,
            Self::DeleteService(_) => IpvsCommand::DelService,
            Self::AddDestination(..) => IpvsCommand::NewDest,
            Self::EditDestination(..) => IpvsCommand::SetDest,
            Self::DeleteDestination(..) => IpvsCommand::DelDest,
            Self::Flush => IpvsCommand::Flush,
            Self::ZeroCounters(_) => IpvsCommand::Zero,
            Self::SetTimeouts(_) => IpvsCommand::SetConfig,
            Self::StartDaemon(_) => IpvsCommand::NewDaemon,
            Self::StopDaemon(_) => IpvsCommand::DelDaemon,
        }
    }

    /// Encodes the operation for a kernel with `features`.
    ///
    /// Refuses, with [`EncodeError::Unsupported`] naming the feature, anything that kernel
    /// would silently ignore (a GUE or GRE tunnel, tunnel checksum flags, a mixed-family
    /// destination, sync daemon multicast settings); and refuses what it would reject
    /// (a persistence netmask of the wrong family, a mixed-family destination without tunnel
    /// forwarding, a non-multicast sync group).
    pub fn to_message(&self, features: &KernelFeatures) -> Result<IpvsMessage, EncodeError> {
        let attributes = match self {
            Self::AddService(s) | Self::EditService(s) => {
                vec![CommandAttribute::Service(service_attributes(s)?)]
            }
            Self::DeleteService(k) | Self::ZeroCounters(Some(k)) => {
                vec![CommandAttribute::Service(service_key_attributes(k))]
            }
            Self::AddDestination(k, d) | Self::EditDestination(k, d) => vec![
                CommandAttribute::Service(service_key_attributes(k)),
                CommandAttribute::Destination(destination_attributes(k.family(), d, features)?),
            ],
            Self::DeleteDestination(k, d) => vec![
                CommandAttribute::Service(service_key_attributes(k)),
                CommandAttribute::Destination(destination_key_attributes(k.family(), d, features)?),
            ],
            Self::Flush | Self::ZeroCounters(None) => Vec::new(),
            Self::SetTimeouts(t) => timeout_attributes(t),
            Self::StartDaemon(d) => vec![CommandAttribute::Daemon(daemon_attributes(d, features)?)],
            Self::StopDaemon(state) => {
                vec![CommandAttribute::Daemon(vec![DaemonAttribute::State(
                    state.number(),
                )])]
            }
        };
        Ok(IpvsMessage::new(self.command(), attributes))
    }
}

/// A read request. Dumps must be sent with `NLM_F_DUMP` and answer with a multipart
/// sequence ended by `NLMSG_DONE`; the others answer with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// One service (`GET_SERVICE` with the key; ESRCH if missing). Decode the reply with
    /// [`super::decode_service`].
    GetService(ServiceKey),
    /// Every service (`GET_SERVICE`, dump). One [`super::decode_service`] per message.
    DumpServices,
    /// The destinations of a service (`GET_DEST`, dump; empty if the service is missing).
    /// One [`super::decode_destination`] per message.
    DumpDestinations(ServiceKey),
    /// The sync daemons (`GET_DAEMON`, dump). One [`super::decode_daemon`] per message.
    DumpDaemons,
    /// Version and connection table size (`GET_INFO`). Decode with [`super::decode_info`].
    GetInfo,
    /// The timeouts (`GET_CONFIG`). Decode with [`super::decode_timeouts`].
    GetConfig,
}

impl Request {
    /// Whether the request must be sent with `NLM_F_DUMP`.
    pub fn is_dump(&self) -> bool {
        matches!(
            self,
            Self::DumpServices | Self::DumpDestinations(_) | Self::DumpDaemons
        )
    }

    /// The request message.
    pub fn to_message(&self) -> IpvsMessage {
        match self {
            Self::GetService(k) => IpvsMessage::new(
                IpvsCommand::GetService,
                vec![CommandAttribute::Service(service_key_attributes(k))],
            ),
            Self::DumpServices => IpvsMessage::new(IpvsCommand::GetService, Vec::new()),
            Self::DumpDestinations(k) => IpvsMessage::new(
                IpvsCommand::GetDest,
                vec![CommandAttribute::Service(service_key_attributes(k))],
            ),
            Self::DumpDaemons => IpvsMessage::new(IpvsCommand::GetDaemon, Vec::new()),
            Self::GetInfo => IpvsMessage::new(IpvsCommand::GetInfo, Vec::new()),
            Self::GetConfig => IpvsMessage::new(IpvsCommand::GetConfig, Vec::new()),
        }
    }
}

impl Operation {
    /// Decodes a request message back into the operation it carries: the inverse of
    /// [`Operation::to_message`], for fake kernels, proxies and tests.
    pub fn from_message(msg: &IpvsMessage) -> Result<Self, DecodeError> {
        let service = || {
            msg.service()
                .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_SERVICE"))
        };
        let dest = || {
            msg.destination()
                .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_DEST"))
        };
        let daemon = || {
            msg.daemon()
                .ok_or(DecodeError::MissingAttribute("IPVS_CMD_ATTR_DAEMON"))
        };
        Ok(match msg.command {
            IpvsCommand::NewService => {
                Self::AddService(decode_service_nest(service()?, false)?.service)
            }
            IpvsCommand::SetService => {
                Self::EditService(decode_service_nest(service()?, false)?.service)
            }
            IpvsCommand::DelService => Self::DeleteService(decode_service_key(service()?)?),
            IpvsCommand::NewDest | IpvsCommand::SetDest => {
                let key = decode_service_key(service()?)?;
                let d = decode_destination_nest(dest()?, key.family(), false)?.destination;
                if msg.command == IpvsCommand::NewDest {
                    Self::AddDestination(key, d)
                } else {
                    Self::EditDestination(key, d)
                }
            }
            IpvsCommand::DelDest => {
                let key = decode_service_key(service()?)?;
                Self::DeleteDestination(key, decode_destination_key(dest()?, key.family())?)
            }
            IpvsCommand::Flush => Self::Flush,
            IpvsCommand::Zero => Self::ZeroCounters(match msg.service() {
                Some(s) => Some(decode_service_key(s)?),
                None => None,
            }),
            IpvsCommand::SetConfig => Self::SetTimeouts(decode_timeout_attributes(&msg.attributes)),
            IpvsCommand::NewDaemon => Self::StartDaemon(decode_daemon_attributes(daemon()?)?),
            IpvsCommand::DelDaemon => {
                let state = daemon()?
                    .iter()
                    .find_map(|a| match a {
                        DaemonAttribute::State(s) => Some(*s),
                        _ => None,
                    })
                    .ok_or(DecodeError::MissingAttribute("IPVS_DAEMON_ATTR_STATE"))?;
                Self::StopDaemon(DaemonState::from_number(state).ok_or(
                    DecodeError::InvalidValue {
                        attribute: "IPVS_DAEMON_ATTR_STATE",
                        value: u64::from(state),
                    },
                )?)
            }
            other => return Err(DecodeError::UnexpectedCommand(other.into())),
        })
    }
}
