//! MessagePack (`wamp.2.msgpack`): binary values as `bin`.

use super::Serializer;
use super::wire::{OwnedMessage, OwnedValue, encode_spliced, placed};
use crate::errors::{DecodeError, EncodeError};
use crate::message::{Field, Message};
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

/// A write into a `Vec` does not fail; should one, its error is named.
fn written<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<(), EncodeError> {
    r.map(drop).map_err(|e| EncodeError {
        serializer: "MessagePack",
        detail: e.to_string(),
    })
}

/// `v` in MessagePack, byte for byte as rmp-serde writes it through the
/// serde bridge (`WireValue`): the most compact integer form, 64-bit
/// floats, `nil` for null, `bin` for bytes. Written directly: serde's
/// machinery cost more than the writing on the router's hot path.
fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), EncodeError> {
    use rmp::encode as w;
    match v {
        Value::Null => written(w::write_nil(out)),
        Value::Bool(b) => written(w::write_bool(out, *b)),
        Value::Int(i) => written(w::write_sint(out, *i)),
        Value::UInt(u) => written(w::write_uint(out, *u)),
        Value::Float(x) => written(w::write_f64(out, *x)),
        Value::Str(x) => written(w::write_str(out, x)),
        Value::Bytes(b) => written(w::write_bin(out, b)),
        Value::List(l) => write_list(out, l),
        Value::Dict(d) => write_dict(out, d),
    }
}

fn write_list(out: &mut Vec<u8>, l: &[Value]) -> Result<(), EncodeError> {
    written(rmp::encode::write_array_len(out, l.len() as u32))?;
    l.iter().try_for_each(|v| write_value(out, v))
}

fn write_dict(out: &mut Vec<u8>, d: &crate::value::Dict) -> Result<(), EncodeError> {
    written(rmp::encode::write_map_len(out, d.len() as u32))?;
    d.iter().try_for_each(|(k, v)| {
        written(rmp::encode::write_str(out, k))?;
        write_value(out, v)
    })
}

/// One element of a message; arguments held raw in another serializer
/// are decoded first (raw MessagePack is copied by `encode_spliced`).
fn write_field(out: &mut Vec<u8>, f: Field<'_>) -> Result<(), EncodeError> {
    let unreadable = |e: crate::errors::DecodeError| EncodeError {
        serializer: "MessagePack",
        detail: e.to_string(),
    };
    match f {
        Field::Int(i) => written(rmp::encode::write_uint(out, i)),
        Field::Str(x) => written(rmp::encode::write_str(out, x)),
        Field::Dict(d) => write_dict(out, d),
        Field::List(l) => write_list(out, l),
        Field::Bytes(b) => written(rmp::encode::write_bin(out, b)),
        Field::RawArgs(r) => write_list(out, &r.decode_args().map_err(unreadable)?),
        Field::RawKwargs(r) => write_dict(out, &r.decode_kwargs().map_err(unreadable)?),
    }
}

pub(super) fn encode_value(v: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_value(out, v)
}

pub(super) fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_spliced(
        msg,
        Serializer::MsgPack,
        out,
        // At most 7 elements: always a fixarray.
        |out, n| written(rmp::encode::write_array_len(out, n as u32)),
        write_field,
        b"",
        b"",
    )
}
