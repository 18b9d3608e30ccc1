//! Fuzz the membership body decoder and the state machine behind it: first byte = kind, rest =
//! body. Decoding must never panic, a decoded message must re-encode to the same bytes, and the
//! state machine must absorb any decodable message without panicking.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use starling::gossip::membership::codec::{Message, decode_section};
use starling::gossip::membership::{Config, LocalNode, Membership};
use starling::gossip::wire::Kind;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let _ = decode_section(body);
    let Ok(message) = Message::decode(Kind(kind), body) else {
        return;
    };
    let mut again = Vec::new();
    message.encode(&mut again);
    assert_eq!(again, body, "decode/encode is not the identity");
    let addr = SocketAddr::from(([10, 0, 0, 1], 7946));
    let me = LocalNode {
        id: 1,
        addr,
        shards: 1,
        partitions: 256,
    };
    let mut membership = Membership::new(me, Config::default(), 0, 0);
    let from = SocketAddr::from(([10, 0, 0, 2], 7946));
    for now in [0, 1_000, 60_000] {
        assert!(
            membership
                .handle_datagram(from, Kind(kind), body, now)
                .is_ok()
        );
        membership.handle_timeout(now);
        while membership.poll_transmit().is_some() {}
        while membership.poll_event().is_some() {}
    }
});
