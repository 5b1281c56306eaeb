#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    trellis_fuzz::decode_and_round_trip(proto::Serializer::Json, data);
});
