//! Arbitrary bytes as an IPVS netlink message, then through every reply decoder.
//! Run with `cargo +nightly fuzz run decode_reply` from `ipvs-rs/`.
#![no_main]

use ipvs::codec::{self, IpvsMessage, Operation};
use ipvs::model::AddressFamily;
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, ParseableParametrized};
use netlink_packet_generic::GenlMessage;

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

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(data)
        && let NetlinkPayload::InnerMessage(g) = msg.payload
    {
        decode_all(&g.payload);
    }
    if let Ok(g) = GenlMessage::<IpvsMessage>::parse_with_param(data, 0x1d) {
        decode_all(&g.payload);
    }
});
