//! MessagePack (`wamp.2.msgpack`): binary values as `bin`.

use super::wire::{OwnedMessage, WireMessage, placed};
use crate::errors::{DecodeError, EncodeError};
use crate::message::Message;
use crate::value::Value;

pub(super) fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(super::MAX_DEPTH + 1);
    let OwnedMessage::<false>(v) =
        serde::Deserialize::deserialize(&mut de).map_err(|e: rmp_serde::decode::Error| {
            DecodeError::Syntax {
                serializer: "MessagePack",
                detail: placed(e.to_string()),
            }
        })?;
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

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    rmp_serde::encode::write(out, &WireMessage::<false>(msg)).map_err(|e| EncodeError {
        serializer: "MessagePack",
        detail: e.to_string(),
    })
}
