//! The IPVS generic netlink payload: a command and its top-level attributes.

use netlink_packet_core::{
    DecodeError as NlDecodeError, Emitable, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::command::CommandAttribute;
use super::constants::*;
use super::info::InfoAttribute;

/// An IPVS command (`IPVS_CMD_*`), the `cmd` of the generic netlink header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsCommand {
    /// `NEW_SERVICE` (1): add a service; also the command of service replies.
    NewService,
    /// `SET_SERVICE` (2): edit a service.
    SetService,
    /// `DEL_SERVICE` (3): delete a service.
    DelService,
    /// `GET_SERVICE` (4): get one service, or dump all.
    GetService,
    /// `NEW_DEST` (5): add a destination; also the command of destination replies.
    NewDest,
    /// `SET_DEST` (6): edit a destination.
    SetDest,
    /// `DEL_DEST` (7): delete a destination.
    DelDest,
    /// `GET_DEST` (8): dump the destinations of a service.
    GetDest,
    /// `NEW_DAEMON` (9): start a sync daemon; also the command of daemon replies.
    NewDaemon,
    /// `DEL_DAEMON` (10): stop a sync daemon.
    DelDaemon,
    /// `GET_DAEMON` (11): dump the sync daemons.
    GetDaemon,
    /// `SET_CONFIG` (12): set timeouts; also the command of the `GET_CONFIG` reply.
    SetConfig,
    /// `GET_CONFIG` (13): get timeouts.
    GetConfig,
    /// `SET_INFO` (14): the command of the `GET_INFO` reply.
    SetInfo,
    /// `GET_INFO` (15): get version and connection table size.
    GetInfo,
    /// `ZERO` (16): zero counters.
    Zero,
    /// `FLUSH` (17): delete every service.
    Flush,
    /// Any other command number.
    Other(u8),
}

impl From<IpvsCommand> for u8 {
    fn from(c: IpvsCommand) -> u8 {
        use IpvsCommand::*;
        match c {
            NewService => IPVS_CMD_NEW_SERVICE,
            SetService => IPVS_CMD_SET_SERVICE,
            DelService => IPVS_CMD_DEL_SERVICE,
            GetService => IPVS_CMD_GET_SERVICE,
            NewDest => IPVS_CMD_NEW_DEST,
            SetDest => IPVS_CMD_SET_DEST,
            DelDest => IPVS_CMD_DEL_DEST,
            GetDest => IPVS_CMD_GET_DEST,
            NewDaemon => IPVS_CMD_NEW_DAEMON,
            DelDaemon => IPVS_CMD_DEL_DAEMON,
            GetDaemon => IPVS_CMD_GET_DAEMON,
            SetConfig => IPVS_CMD_SET_CONFIG,
            GetConfig => IPVS_CMD_GET_CONFIG,
            SetInfo => IPVS_CMD_SET_INFO,
            GetInfo => IPVS_CMD_GET_INFO,
            Zero => IPVS_CMD_ZERO,
            Flush => IPVS_CMD_FLUSH,
            Other(n) => n,
        }
    }
}

impl From<u8> for IpvsCommand {
    fn from(n: u8) -> Self {
        use IpvsCommand::*;
        match n {
            IPVS_CMD_NEW_SERVICE => NewService,
            IPVS_CMD_SET_SERVICE => SetService,
            IPVS_CMD_DEL_SERVICE => DelService,
            IPVS_CMD_GET_SERVICE => GetService,
            IPVS_CMD_NEW_DEST => NewDest,
            IPVS_CMD_SET_DEST => SetDest,
            IPVS_CMD_DEL_DEST => DelDest,
            IPVS_CMD_GET_DEST => GetDest,
            IPVS_CMD_NEW_DAEMON => NewDaemon,
            IPVS_CMD_DEL_DAEMON => DelDaemon,
            IPVS_CMD_GET_DAEMON => GetDaemon,
            IPVS_CMD_SET_CONFIG => SetConfig,
            IPVS_CMD_GET_CONFIG => GetConfig,
            IPVS_CMD_SET_INFO => SetInfo,
            IPVS_CMD_GET_INFO => GetInfo,
            IPVS_CMD_ZERO => Zero,
            IPVS_CMD_FLUSH => Flush,
            n => Other(n),
        }
    }
}

impl IpvsCommand {
    /// Whether top-level attributes of this command are [`InfoAttribute`]s.
    fn carries_info(self) -> bool {
        matches!(self, Self::SetInfo | Self::GetInfo)
    }
}

/// An IPVS generic netlink message: what goes after the `genlmsghdr`.
///
/// Plugs into `NetlinkMessage<GenlMessage<IpvsMessage>>`; the family is `"IPVS"`, version 1,
/// and its id must be resolved at run time (`family_id()` is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub command: IpvsCommand,
    /// The top-level attributes, in order.
    pub attributes: Vec<CommandAttribute>,
}

impl IpvsMessage {
    /// A message with the given command and attributes.
    pub fn new(command: IpvsCommand, attributes: Vec<CommandAttribute>) -> Self {
        Self {
            command,
            attributes,
        }
    }

    /// The nested service attributes, if the message has a `SERVICE` attribute.
    pub fn service(&self) -> Option<&[super::ServiceAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            CommandAttribute::Service(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// The nested destination attributes, if any.
    pub fn destination(&self) -> Option<&[super::DestinationAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            CommandAttribute::Destination(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// The nested daemon attributes, if any.
    pub fn daemon(&self) -> Option<&[super::DaemonAttribute]> {
        self.attributes.iter().find_map(|a| match a {
            CommandAttribute::Daemon(v) => Some(v.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.command.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attributes.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, NlDecodeError> {
        let command = IpvsCommand::from(header.cmd);
        let attributes = NlasIterator::new(buf)
            .map(|nla| {
                nla.and_then(|nla| {
                    if command.carries_info() {
                        InfoAttribute::parse(&nla).map(CommandAttribute::Info)
                    } else {
                        CommandAttribute::parse(&nla)
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            command,
            attributes,
        })
    }
}
