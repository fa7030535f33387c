//! Random bytes into every decoder: errors are fine, panics are not. Raise the case count
//! with `PROPTEST_CASES` (e.g. 200000) for a longer run.

use ipvs::codec::{self, IpvsMessage, ListingMessage, Operation};
use ipvs::model::AddressFamily;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, ParseableParametrized};
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;

fn decode_all(m: &IpvsMessage) {
    let _ = codec::decode_service(m);
    let _ = codec::decode_destination(m, AddressFamily::Ipv4);
    let _ = codec::decode_destination(m, AddressFamily::Ipv6);
    let _ = codec::decode_daemon(m);
    let _ = codec::decode_info(m);
    let _ = codec::decode_timeouts(m);
    let _ = Operation::from_message(m);
    let _ = codec::observe_features(m, Default::default());
}

/// The listing decoder never panics, and agrees with the attribute-list decoders wherever
/// they succeed (it may accept more: it does not parse the neighbours of the nest it reads).
fn listing_agrees(bytes: &[u8]) {
    let listed = GenlMessage::<ListingMessage>::parse_with_param(bytes, 0x1d);
    let Ok(plain) = GenlMessage::<IpvsMessage>::parse_with_param(bytes, 0x1d) else {
        return;
    };
    let listed = listed.expect("what parses as an IpvsMessage parses for a listing");
    let plain = plain.payload;
    match listed.payload {
        ListingMessage::Service(fields) => {
            if let Ok(entry) = codec::decode_service(&plain) {
                assert_eq!(fields.finish().ok(), Some(entry));
            }
        }
        ListingMessage::Destination(fields) => {
            for family in [AddressFamily::Ipv4, AddressFamily::Ipv6] {
                if let Ok(entry) = codec::decode_destination(&plain, family) {
                    assert_eq!(fields.clone().finish(family).ok(), Some(entry));
                }
            }
        }
        ListingMessage::Message(m) => assert_eq!(m, plain),
    }
}

/// Bytes that look like IPVS attributes more often than uniform noise does: a genl header
/// then a run of small TLVs with plausible types.
fn attribute_soup() -> impl Strategy<Value = Vec<u8>> {
    let tlv = (
        0u16..20,
        prop::bool::ANY,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(kind, nested, value)| {
            let mut v = Vec::new();
            v.extend_from_slice(&((value.len() + 4) as u16).to_ne_bytes());
            v.extend_from_slice(&(kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
            v.extend_from_slice(&value);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v
        });
    (
        0u8..20,
        prop::collection::vec(tlv, 0..8),
        prop::collection::vec(tlv_nest(), 0..3),
    )
        .prop_map(|(cmd, flat, nests)| {
            let mut out = vec![cmd, 1, 0, 0];
            for t in flat.into_iter().chain(nests) {
                out.extend(t);
            }
            out
        })
}

/// A nested attribute (SERVICE, DEST or DAEMON) holding random small TLVs, some themselves
/// nests (statistics).
fn tlv_nest() -> impl Strategy<Value = Vec<u8>> {
    (
        1u16..4,
        prop::collection::vec((0u16..16, prop::collection::vec(any::<u8>(), 0..20)), 0..10),
    )
        .prop_map(|(kind, inner)| {
            let mut body = Vec::new();
            for (k, v) in inner {
                body.extend_from_slice(&((v.len() + 4) as u16).to_ne_bytes());
                body.extend_from_slice(&k.to_ne_bytes());
                body.extend_from_slice(&v);
                while body.len() % 4 != 0 {
                    body.push(0);
                }
            }
            let mut out = Vec::new();
            out.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend(body);
            out
        })
}

proptest! {
    #[test]
    fn netlink_messages_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&bytes)
            && let NetlinkPayload::InnerMessage(g) = msg.payload
        {
            decode_all(&g.payload);
        }
    }

    #[test]
    fn genl_payloads_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(g) = GenlMessage::<IpvsMessage>::parse_with_param(bytes.as_slice(), 0x1d) {
            decode_all(&g.payload);
        }
        listing_agrees(&bytes);
    }

    #[test]
    fn genl_payloads_of_attribute_soup(bytes in attribute_soup()) {
        if let Ok(g) = GenlMessage::<IpvsMessage>::parse_with_param(bytes.as_slice(), 0x1d) {
            decode_all(&g.payload);
        }
        listing_agrees(&bytes);
    }
}
