//! Arbitrary bytes through every receive path of the crate, then through every reply decoder.
//! Errors are fine; panics, aborts and unbounded allocation are not.
//!
//! The input is read three ways:
//!
//! 1. as a netlink datagram fed to the crate's own sans-IO receive path,
//!    `transport::Exchange::feed` (nlmsghdr framing of several messages, ACK/DONE/ERROR with
//!    extended-ACK TLVs, sequence and port matching, then `GenlMessage<IpvsMessage>`); the
//!    exchange is set up with the family id, sequence number and port id of the input's first
//!    header, so the fuzzer reaches the reply path without guessing them;
//! 2. as one netlink message through netlink-packet-core's `NetlinkMessage::deserialize`;
//! 3. as a bare generic netlink message (genlmsghdr + attributes).
//!
//! The bare generic netlink message is also parsed as a `ListingMessage` (the listing
//! decoder), which must agree with the attribute-list decoders wherever they succeed.
//!
//! Every `IpvsMessage` obtained goes through `decode_service`, `decode_destination` (IPv4
//! and IPv6 services), `decode_daemon`, `decode_info`, `decode_timeouts`,
//! `Operation::from_message` and `observe_features`.
//!
//! See `ipvs-rs/FUZZING.md` for how to run it on the stable toolchain.
#![no_main]

use ipvs::codec::{self, IpvsMessage, ListingMessage, Operation, Request};
use ipvs::model::{AddressFamily, Feature, KernelFeatures};
use ipvs::transport::Exchange;
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NLM_F_DUMP, NetlinkMessage, NetlinkPayload, ParseableParametrized};
use netlink_packet_generic::GenlMessage;

/// The family id used when the input does not provide one (the kernel assigns it at run time).
const FAMILY: u16 = 0x20;

fn decode_all(m: &IpvsMessage) {
    // Error messages are built on the error path only: render them too (Display must not
    // panic on whatever the decoders put in them).
    fn check<T>(r: Result<T, impl std::fmt::Display>) {
        if let Err(e) = r {
            let _ = e.to_string();
        }
    }
    check(codec::decode_service(m));
    check(codec::decode_destination(m, AddressFamily::Ipv4));
    check(codec::decode_destination(m, AddressFamily::Ipv6));
    check(codec::decode_daemon(m));
    check(codec::decode_info(m));
    check(codec::decode_timeouts(m));
    check(Operation::from_message(m));
    // observe_features never downgrades.
    for start in [KernelFeatures::baseline(), KernelFeatures::all()] {
        let seen = codec::observe_features(m, start);
        for f in Feature::ALL {
            assert!(
                !start.supports(f) || seen.supports(f),
                "observe_features dropped {f:?}"
            );
        }
    }
}

/// The listing decoder: never panics, and agrees with the attribute-list decoders wherever
/// they succeed on the same bytes.
fn listing(data: &[u8]) {
    let listed = GenlMessage::<ListingMessage>::parse_with_param(data, FAMILY);
    let plain = GenlMessage::<IpvsMessage>::parse_with_param(data, FAMILY);
    let (listed, plain) = match (listed, plain) {
        (Ok(listed), Ok(plain)) => (listed.payload, plain.payload),
        (Err(_), Ok(_)) => panic!("an IpvsMessage that a listing cannot parse"),
        (Ok(listed), Err(_)) => {
            match listed.payload {
                ListingMessage::Service(fields) => {
                    let _ = fields.finish().map_err(|e| e.to_string());
                }
                ListingMessage::Destination(fields) => {
                    let _ = fields.finish(AddressFamily::Ipv6).map_err(|e| e.to_string());
                }
                ListingMessage::Message(m) => decode_all(&m),
            }
            return;
        }
        (Err(_), Err(_)) => return,
    };
    match listed {
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

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The crate's receive path: three requests in flight (a dump, a plain request, a dump),
/// numbered from the first header's sequence number; the datagram is fed twice (the second
/// time exercises the stale/duplicate handling), then every reply is decoded.
fn exchange(data: &[u8]) {
    let ty = read_u16(data, 4).filter(|&t| t >= 0x10).unwrap_or(FAMILY);
    let seq = read_u32(data, 8).unwrap_or(1);
    let port = read_u32(data, 12).unwrap_or(0);
    let mut ex = Exchange::<IpvsMessage>::new(ty, port, seq);
    ex.begin();
    let mut out = Vec::new();
    let dump = Request::DumpServices.to_message();
    let get = Request::GetInfo.to_message();
    ex.push(&dump, NLM_F_DUMP, &mut out).expect("push");
    ex.push(&get, 0, &mut out).expect("push");
    ex.push(&dump, NLM_F_DUMP, &mut out).expect("push");
    if ex.feed(data).is_ok() && ex.in_flight() > 0 {
        let _ = ex.feed(data);
    }
    for result in ex.finish() {
        match result {
            Ok(replies) => replies.iter().for_each(decode_all),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let _ = ex.draining();
    let _ = ex.discarded();
}

fuzz_target!(|data: &[u8]| {
    exchange(data);
    if let Ok(msg) = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(data)
        && let NetlinkPayload::InnerMessage(g) = msg.payload
    {
        decode_all(&g.payload);
    }
    if let Ok(g) = GenlMessage::<IpvsMessage>::parse_with_param(data, FAMILY) {
        decode_all(&g.payload);
    }
    listing(data);
});
