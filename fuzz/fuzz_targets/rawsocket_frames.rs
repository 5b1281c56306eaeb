#![no_main]

//! RawSocket framing: the first byte picks the frame limit (2^9..2^24 as in
//! the handshake), the second how the rest is cut into reads. No input may
//! panic, no frame may exceed the limit, and the buffer must never be asked
//! to reserve beyond one frame (give or take BytesMut's own doubling).

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::rawsocket::{Frame, RawSocketCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [exp, chunk, rest @ ..] = data else {
        return;
    };
    let max = 1usize << (9 + (exp & 0x0F));
    let chunk = usize::from(*chunk).max(1);
    let mut codec = RawSocketCodec { max_incoming: max };
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Message(b) | Frame::Ping(b) | Frame::Pong(b))) => {
                    assert!(b.len() <= max, "a frame of {} bytes passed a limit of {max}", b.len());
                }
                Ok(None) => {
                    // What the decoder may reserve is one frame of at most
                    // the limit; BytesMut may double that as it grows.
                    let bound = 2 * (4 + max + chunk) + 64;
                    assert!(buf.capacity() <= bound, "reserved {} for a limit of {max}", buf.capacity());
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
