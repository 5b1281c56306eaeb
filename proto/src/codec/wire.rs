//! The serde bridge between [`Message`]/[`Value`] and the three serializers.
//!
//! `JSON = true` applies WAMP's binary convention for JSON: bytes travel as a
//! string that starts with `\u0000` followed by standard base64. MessagePack
//! and CBOR carry bytes natively (`JSON = false`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::message::{Field, Message};
use crate::value::{Dict, Value};

/// Pre-allocation cap for lists and maps whose declared length comes from the
/// peer: a hostile length prefix must not reserve memory the data never fills.
const MAX_PREALLOC: usize = 1024;

/// A message borrowed for encoding.
pub(crate) struct WireMessage<'a, const JSON: bool>(pub &'a Message);

/// A value borrowed for encoding.
pub(crate) struct WireValue<'a, const JSON: bool>(pub &'a Value);
struct WireDict<'a, const JSON: bool>(&'a Dict);
struct WireList<'a, const JSON: bool>(&'a [Value]);
struct WireBytes<'a, const JSON: bool>(&'a [u8]);

impl<const JSON: bool> Serialize for WireBytes<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if JSON {
            let mut text = String::with_capacity(1 + self.0.len().div_ceil(3) * 4);
            text.push('\0');
            B64.encode_string(self.0, &mut text);
            s.serialize_str(&text)
        } else {
            s.serialize_bytes(self.0)
        }
    }
}

impl<const JSON: bool> Serialize for WireMessage<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.0.fields();
        let fields = fields.as_slice();
        let mut seq = s.serialize_seq(Some(fields.len()))?;
        for f in fields {
            seq.serialize_element(&WireField::<JSON>(*f))?;
        }
        seq.end()
    }
}

/// One element of a message, for encoding. Raw arguments
/// ([`crate::message::RawArgs`]) are decoded here: a serializer that
/// takes them as they are never asks (see [`encode_spliced`]).
pub(crate) struct WireField<'a, const JSON: bool>(pub Field<'a>);

impl<const JSON: bool> Serialize for WireField<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        match self.0 {
            Field::Int(i) => s.serialize_u64(i),
            Field::Str(x) => s.serialize_str(x),
            Field::Dict(d) => WireDict::<JSON>(d).serialize(s),
            Field::List(l) => WireList::<JSON>(l).serialize(s),
            Field::Bytes(b) => WireBytes::<JSON>(b).serialize(s),
            Field::RawArgs(r) => {
                let args = r.decode_args().map_err(S::Error::custom)?;
                WireList::<JSON>(&args).serialize(s)
            }
            Field::RawKwargs(r) => {
                let kwargs = r.decode_kwargs().map_err(S::Error::custom)?;
                WireDict::<JSON>(&kwargs).serialize(s)
            }
        }
    }
}

/// Whether `msg` carries arguments still encoded in `serializer`, which
/// [`encode_spliced`] then writes as they are.
pub(crate) fn has_raw_in(msg: &Message, serializer: crate::Serializer) -> bool {
    msg.payload()
        .and_then(|p| p.raw.as_ref())
        .is_some_and(|r| r.serializer() == serializer)
}

/// Encode `msg` element by element: `start` writes the list's head (for
/// `len` elements), `element` one element, `sep` what goes between two,
/// and raw arguments in `serializer` are copied as they are.
pub(crate) fn encode_spliced<E>(
    msg: &Message,
    serializer: crate::Serializer,
    out: &mut Vec<u8>,
    start: impl FnOnce(&mut Vec<u8>, usize) -> Result<(), E>,
    mut element: impl FnMut(&mut Vec<u8>, Field<'_>) -> Result<(), E>,
    sep: &[u8],
    end: &[u8],
) -> Result<(), E> {
    let fields = msg.fields();
    let fields = fields.as_slice();
    start(out, fields.len())?;
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        match f {
            Field::RawArgs(r) if r.serializer() == serializer => out.extend_from_slice(r.args()),
            Field::RawKwargs(r) if r.serializer() == serializer => {
                out.extend_from_slice(r.kwargs().unwrap_or_default());
            }
            other => element(out, *other)?,
        }
    }
    out.extend_from_slice(end);
    Ok(())
}

impl<const JSON: bool> Serialize for WireDict<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &WireValue::<JSON>(v))?;
        }
        map.end()
    }
}

impl<const JSON: bool> Serialize for WireList<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&WireValue::<JSON>(v))?;
        }
        seq.end()
    }
}

impl<const JSON: bool> Serialize for WireValue<'_, JSON> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(x) => s.serialize_f64(*x),
            Value::Str(x) => s.serialize_str(x),
            Value::Bytes(b) => WireBytes::<JSON>(b).serialize(s),
            Value::List(l) => WireList::<JSON>(l).serialize(s),
            Value::Dict(d) => WireDict::<JSON>(d).serialize(s),
        }
    }
}

thread_local! {
    /// Where in a message decoding failed: the type code (if read) and the
    /// element (1-based). The deserializer's error is left as it is
    /// (ciborium would print a wrapped message in its Debug form); the codec
    /// puts the place in front. Decoding is synchronous: set and read on
    /// one thread, within one call.
    static PLACE: std::cell::Cell<Option<(Option<u64>, usize)>> = const { std::cell::Cell::new(None) };
}

/// A whole message (a list) decoded from the wire; on failure the place is
/// noted for [`placed`].
pub(crate) struct OwnedMessage<const JSON: bool>(pub Value);

impl<'de, const JSON: bool> Deserialize<'de> for OwnedMessage<JSON> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PLACE.with(|p| p.set(None));
        d.deserialize_any(MessageVisitor::<JSON>).map(OwnedMessage)
    }
}

struct MessageVisitor<const JSON: bool>;

impl<'de, const JSON: bool> Visitor<'de> for MessageVisitor<JSON> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP message, which must be a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(8));
        let mut code = None;
        loop {
            match seq.next_element::<OwnedValue<JSON>>() {
                Ok(Some(OwnedValue(v))) => {
                    if list.is_empty() {
                        code = v.as_u64();
                    }
                    list.push(v);
                }
                Ok(None) => return Ok(Value::List(list)),
                Err(e) => {
                    PLACE.with(|p| p.set(Some((code, list.len() + 1))));
                    return Err(e);
                }
            }
        }
    }
}

/// `detail` with the place in the message where decoding failed in front.
pub(crate) fn placed(detail: String) -> String {
    match PLACE.with(std::cell::Cell::take) {
        None => detail,
        Some((_, 1)) => format!("the message type code (element 1): {detail}"),
        Some((Some(code), pos)) => format!(
            "{} element {pos} ({}): {detail}",
            crate::message::type_name(code),
            crate::message::field_name(code, pos)
        ),
        Some((None, pos)) => format!("element {pos}: {detail}"),
    }
}

/// A value decoded from the wire.
pub(crate) struct OwnedValue<const JSON: bool>(pub Value);

impl<'de, const JSON: bool> Deserialize<'de> for OwnedValue<JSON> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor::<JSON>).map(OwnedValue)
    }
}

struct ValueVisitor<const JSON: bool>;

impl<const JSON: bool> ValueVisitor<JSON> {
    fn string<E: de::Error>(s: String) -> Result<Value, E> {
        if JSON && let Some(b64) = s.strip_prefix('\0') {
            return B64.decode(b64).map(Value::Bytes).map_err(|e| {
                E::custom(format!(
                    "a string starting with \\u0000 must be base64-encoded binary: {e}"
                ))
            });
        }
        Ok(Value::Str(s))
    }
}

impl<'de, const JSON: bool> Visitor<'de> for ValueVisitor<JSON> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::UInt(u))
        } else {
            Err(E::custom("integer out of the 64-bit range"))
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom("integer out of the 64-bit range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Self::string(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Self::string(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    /// A CBOR tag (ciborium hands tags over as an enum): the RFC 8746
    /// typed arrays (64..=87, a byte string inside) are binary, which is
    /// how cbor-x (wampy.js) sends every `Uint8Array`; any other tag is
    /// read as the value it wraps.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        let (_, tagged) = data.variant::<de::IgnoredAny>()?;
        tagged.tuple_variant(2, TagVisitor::<JSON>)
    }
    /// rmp-serde hands a MessagePack extension value over as a newtype
    /// struct; WAMP has no use for one.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<Value, D::Error> {
        Err(de::Error::custom(
            "a MessagePack extension value, which WAMP cannot carry (wampy.js encodes undefined this way: send null instead)",
        ))
    }
    // Nested values add nothing to an error's text: only the message level
    // (type and element) does, once, so an error stays short at any depth.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(OwnedValue(v)) = seq.next_element::<OwnedValue<JSON>>()? {
            list.push(v);
        }
        Ok(Value::List(list))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut dict = Dict::new();
        while let Some(key) = map.next_key::<DictKey>()? {
            let OwnedValue(v) = map.next_value::<OwnedValue<JSON>>()?;
            dict.insert(key.0, v);
        }
        Ok(Value::Dict(dict))
    }
}

/// RFC 8746 typed arrays: tag 64 (uint8) to 87, each a byte string.
const TYPED_ARRAYS: std::ops::RangeInclusive<u64> = 64..=87;

/// A tag number and the value it wraps.
struct TagVisitor<const JSON: bool>;

impl<'de, const JSON: bool> Visitor<'de> for TagVisitor<JSON> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CBOR tag and its value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: u64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("a CBOR tag without its number"))?;
        let OwnedValue(v) = seq
            .next_element::<OwnedValue<JSON>>()?
            .ok_or_else(|| de::Error::custom(format!("CBOR tag {tag} without a value")))?;
        match v {
            Value::Bytes(_) if TYPED_ARRAYS.contains(&tag) => Ok(v),
            other if TYPED_ARRAYS.contains(&tag) => Err(de::Error::custom(format!(
                "CBOR tag {tag} (an RFC 8746 typed array) must wrap a byte string, found {}",
                other.type_name()
            ))),
            other => Ok(other),
        }
    }
}

/// A dict key: WAMP dicts are keyed by strings only.
struct DictKey(String);

impl<'de> Deserialize<'de> for DictKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = DictKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string dict key (WAMP dict keys must be strings)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DictKey, E> {
                Ok(DictKey(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<DictKey, E> {
                Ok(DictKey(v))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}
