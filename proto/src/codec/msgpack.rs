//! MessagePack (`wamp.2.msgpack`): binary values as `bin`.

use super::Serializer;
use super::wire::{
    OwnedMessage, OwnedValue, WireField, WireMessage, WireValue, encode_spliced, has_raw_in, placed,
};
use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

/// A message (`message`: a list, its places named on failure) or any
/// value.
pub(super) fn decode(bytes: &[u8], message: bool) -> Result<Value, DecodeError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(super::MAX_DEPTH + 1);
    let syntax = |e: rmp_serde::decode::Error| DecodeError::Syntax {
        serializer: "MessagePack",
        detail: placed(e.to_string()),
    };
    let v = if message {
        let OwnedMessage::<false>(v) = serde::Deserialize::deserialize(&mut de).map_err(syntax)?;
        v
    } else {
        let OwnedValue::<false>(v) = serde::Deserialize::deserialize(&mut de).map_err(syntax)?;
        v
    };
    let rest = bytes.len() as u64 - de.position();
    if rest > 0 {
        return Err(DecodeError::Syntax {
            serializer: "MessagePack",
            detail: format!("{rest} trailing byte(s) after the message"),
        });
    }
    super::check_depth(&v, "MessagePack")?;
    Ok(v)
}

pub(super) fn encode_value(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    rmp_serde::encode::write(out, &WireValue::<false>(v)).map_err(|e| EncodeError {
        serializer: "MessagePack",
        detail: e.to_string(),
    })
}

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let failed = |e: rmp_serde::encode::Error| EncodeError {
        serializer: "MessagePack",
        detail: e.to_string(),
    };
    if has_raw_in(msg, Serializer::MsgPack) {
        return encode_spliced(
            msg,
            Serializer::MsgPack,
            out,
            |out, n| {
                // At most 7 elements: always fits a fixarray.
                rmp::encode::write_array_len(out, n as u32)
                    .map(drop)
                    .map_err(rmp_serde::encode::Error::InvalidValueWrite)
            },
            |out, f| rmp_serde::encode::write(out, &WireField::<false>(f)),
            b"",
            b"",
        )
        .map_err(failed);
    }
    rmp_serde::encode::write(out, &WireMessage::<false>(msg)).map_err(failed)
}
