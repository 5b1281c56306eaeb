//! What every decoder target checks: decoding arbitrary bytes never panics,
//! and a message that decodes re-encodes to bytes that decode to a message
//! which encodes to the very same bytes (NaN-safe, unlike comparing values).

use proto::Serializer;

/// Decode `data` with `serializer`; on success, check the round trip.
pub fn decode_and_round_trip(serializer: Serializer, data: &[u8]) {
    let Ok(msg) = serializer.decode(data) else {
        return;
    };
    let first = serializer
        .encode_to_vec(&msg)
        .expect("a decoded message must encode");
    let again = serializer
        .decode(&first)
        .expect("an encoded message must decode");
    let second = serializer
        .encode_to_vec(&again)
        .expect("a decoded message must encode");
    assert_eq!(first, second, "encoding is not stable across a round trip");
}
