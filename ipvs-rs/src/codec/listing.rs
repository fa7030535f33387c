//! [`ListingMessage`]: the IPVS payload of a listing, whose service and destination replies
//! are decoded straight from their bytes.
//!
//! [`IpvsMessage`] parses every reply into attribute lists (a `Vec` per nest, two more for the
//! statistics nests of each service and destination) before [`decode_service`] or
//! [`decode_destination`] read them. That is the right shape for looking at a message, but a
//! listing of a large table decodes hundreds of thousands of destinations and throws the lists
//! away at once: building them costs as much CPU as the kernel's own work for the listing.
//! [`ListingMessage`] gathers each nest's fields as the
//! bytes are walked ([`ServiceFields`], [`DestinationFields`]) and [`ServiceFields::finish`] /
//! [`DestinationFields::finish`] check them with the code the attribute-list decoders use, so
//! both read the same bytes the same way (a property test compares them).
//!
//! [`decode_service`]: super::decode_service
//! [`decode_destination`]: super::decode_destination

use netlink_packet_core::{DecodeError as NlDecodeError, Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::constants::*;
use super::destination::DestinationFields;
use super::message::{IpvsCommand, IpvsMessage};
use super::service::ServiceFields;
use super::util::Attributes;

/// An IPVS generic-netlink payload for listings: requests are plain [`IpvsMessage`]s; a
/// service reply (`NEW_SERVICE` with a `SERVICE` nest) and a destination reply (`NEW_DEST`
/// with a `DEST` nest) are gathered into fields without attribute lists; any other message is
/// parsed as an [`IpvsMessage`].
///
/// Use it as the payload type of a [`Connection`](crate::transport::Connection) that lists:
/// the [`Ipvs`](crate::Ipvs) and `AsyncIpvs` handles read services and destinations this way.
#[derive(Debug)]
pub enum ListingMessage {
    /// A request, or a reply that is neither a service nor a destination.
    Message(IpvsMessage),
    /// The fields of a service reply.
    Service(ServiceFields),
    /// The fields of a destination reply (its family is settled by the service listed; see
    /// [`DestinationFields::finish`]).
    Destination(DestinationFields),
}

impl From<IpvsMessage> for ListingMessage {
    fn from(message: IpvsMessage) -> Self {
        Self::Message(message)
    }
}

impl GenlFamily for ListingMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        match self {
            Self::Message(m) => m.command.into(),
            Self::Service(_) => IPVS_CMD_NEW_SERVICE,
            Self::Destination(_) => IPVS_CMD_NEW_DEST,
        }
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

/// Requests are emitted as their [`IpvsMessage`]; gathered replies are only ever received,
/// and emit nothing.
impl Emitable for ListingMessage {
    fn buffer_len(&self) -> usize {
        match self {
            Self::Message(m) => m.buffer_len(),
            Self::Service(_) | Self::Destination(_) => 0,
        }
    }

    fn emit(&self, buffer: &mut [u8]) {
        if let Self::Message(m) = self {
            m.emit(buffer);
        }
    }
}

impl ParseableParametrized<[u8], GenlHeader> for ListingMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, NlDecodeError> {
        let (nest, name) = match header.cmd {
            IPVS_CMD_NEW_SERVICE => (IPVS_CMD_ATTR_SERVICE, "IPVS_CMD_ATTR_SERVICE"),
            IPVS_CMD_NEW_DEST => (IPVS_CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST"),
            _ => return IpvsMessage::parse_with_param(buf, header).map(Self::Message),
        };
        // The first such nest (as `IpvsMessage::service` and `::destination` take), found
        // without parsing its neighbours (the kernel sends it alone); every header is checked.
        let mut found = None;
        for attribute in Attributes::new(buf) {
            let (kind, value) = attribute?;
            if kind == nest && found.is_none() {
                found = Some(value);
            }
        }
        let Some(value) = found else {
            // Let the attribute-list decoder report what is missing.
            return IpvsMessage::parse_with_param(buf, header).map(Self::Message);
        };
        let in_nest = |e: NlDecodeError| NlDecodeError::from(format!("{name}: {e}"));
        if nest == IPVS_CMD_ATTR_SERVICE {
            gather(value, ServiceFields::take_nla)
                .map(Self::Service)
                .map_err(in_nest)
        } else {
            gather(value, DestinationFields::take_nla)
                .map(Self::Destination)
                .map_err(in_nest)
        }
    }
}

/// Gathers the fields of the nest whose payload is `value`, one attribute at a time.
fn gather<F: Default>(
    value: &[u8],
    take: fn(&mut F, u16, &[u8]) -> Result<(), NlDecodeError>,
) -> Result<F, NlDecodeError> {
    let mut fields = F::default();
    for attribute in Attributes::new(value) {
        let (kind, value) = attribute?;
        take(&mut fields, kind, value)?;
    }
    Ok(fields)
}

impl ListingMessage {
    /// The command of the message.
    pub fn command(&self) -> IpvsCommand {
        IpvsCommand::from(GenlFamily::command(self))
    }
}
