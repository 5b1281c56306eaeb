//! Decoding for a router, which forwards arguments rather than reads them.
//!
//! [`Serializer::decode_forwarding`] decodes CALL, PUBLISH, YIELD, ERROR
//! and RESULT (which a router gets from another node of its cluster)
//! like [`Serializer::decode`] except their `args` and `kwargs`: those are
//! checked here (they are well formed, a list and a dict, nested no deeper
//! than [`MAX_DEPTH`], JSON binary strings are base64, MessagePack strings
//! UTF-8, no extension types) and kept as bytes ([`RawArgs`]). A peer of the
//! same serializer then gets them as they are, with no value tree built and
//! none encoded; a peer of another one gets them converted.
//!
//! The fast path only ever says yes or "ask the full decoder": anything it
//! does not take (a malformed message, CBOR, a passthru binary, a string
//! with escapes after its `\u0000`) is decoded by [`Serializer::decode`],
//! so errors and edge cases read exactly as they do there.

use std::cell::RefCell;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::wire::OwnedValue;
use super::{MAX_DEPTH, Serializer, check_depth};
use crate::errors::DecodeError;
use crate::message::{Message, RawArgs, code};
use crate::value::{Dict, Value};

impl Serializer {
    /// Decode one message a router received, keeping the arguments of
    /// CALL, PUBLISH, YIELD, ERROR and RESULT as they came (see the module's
    /// documentation). Whoever reads those arguments decodes them first
    /// ([`crate::Payload::decode_raw`]).
    ///
    /// # Errors
    /// As [`Serializer::decode`], with the same text.
    pub fn decode_forwarding(self, bytes: &[u8]) -> Result<Message, DecodeError> {
        let fast = match self {
            Serializer::Json => json(bytes),
            Serializer::MsgPack => msgpack(bytes),
            Serializer::Cbor => None,
        };
        match fast {
            Some(m) => Ok(m),
            None => self.decode(bytes),
        }
    }
}

/// Where `Arguments` sits (0-based) in the messages a router forwards.
fn args_index(c: u64) -> Option<usize> {
    match c {
        code::CALL | code::PUBLISH => Some(4),
        code::YIELD | code::RESULT => Some(3),
        code::ERROR => Some(5),
        _ => None,
    }
}

/// The message from its elements before the arguments (already checked
/// for depth), with the arguments (if any) as they came. An empty `args`
/// without `kwargs` is no payload, as the full decoder has it.
fn assemble(
    header: Vec<Value>,
    serializer: Serializer,
    args: Option<(&[u8], &[u8])>,
    empty: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<Message> {
    let mut msg = Message::from_list(header).ok()?;
    if let Some((a, k)) = args
        && !empty(a, k)
    {
        msg.payload_mut()?.raw = Some(RawArgs::new(serializer, a, k)?);
    }
    Some(msg)
}

// --- JSON ---------------------------------------------------------------

/// The elements before the arguments, decoded, and the arguments as text.
struct JsonParts<'de> {
    header: Vec<Value>,
    args: Option<(&'de str, Option<&'de str>)>,
}

struct JsonPartsVisitor;

impl<'de> Visitor<'de> for JsonPartsVisitor {
    type Value = Option<JsonParts<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP message")
    }

    // `None` leaves the rest to the full decoder; serde_json then also
    // refuses elements left unread, which sends those there too.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(OwnedValue::<true>(c)) = seq.next_element()? else {
            return Ok(None);
        };
        let Some(at) = c.as_u64().and_then(args_index) else {
            return Ok(None);
        };
        let mut header = Vec::with_capacity(at);
        header.push(c);
        while header.len() < at {
            match seq.next_element::<OwnedValue<true>>()? {
                Some(OwnedValue(v)) => header.push(v),
                None => return Ok(None),
            }
        }
        let Some(args) = seq.next_element::<&'de RawValue>()? else {
            return Ok(Some(JsonParts { header, args: None }));
        };
        let kwargs = seq.next_element::<&'de RawValue>()?;
        if kwargs.is_some() && seq.next_element::<IgnoredAny>()?.is_some() {
            return Ok(None);
        }
        Ok(Some(JsonParts {
            header,
            args: Some((args.get(), kwargs.map(RawValue::get))),
        }))
    }
}

fn json(bytes: &[u8]) -> Option<Message> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parts = serde::Deserializer::deserialize_seq(&mut de, JsonPartsVisitor).ok()??;
    de.end().ok()?;
    let args = match parts.args {
        None => None,
        Some((a, k)) => {
            let k = k.unwrap_or("");
            let fits = a.starts_with('[')
                && (k.is_empty() || k.starts_with('{'))
                && json_checked(a.as_bytes())
                && json_checked(k.as_bytes());
            if !fits {
                return None;
            }
            Some((a.as_bytes(), k.as_bytes()))
        }
    };
    let blank = |b: &[u8]| b.len() < 2 || b[1..b.len() - 1].iter().all(u8::is_ascii_whitespace);
    let header = Value::List(parts.header);
    check_depth(&header, "").ok()?;
    let Value::List(header) = header else {
        return None;
    };
    assemble(header, Serializer::Json, args, |a, k| {
        blank(a) && (k.is_empty() || blank(k))
    })
}

/// Whether valid JSON `text` (an element of a message) decodes as the full
/// decoder would have it: nested within [`MAX_DEPTH`] (the message's own
/// list counts), every string that starts with `\u0000` is base64, and
/// no number overflows a float.
/// A binary string with an escape in its base64 part is left to the full
/// decoder (false).
fn json_checked(text: &[u8]) -> bool {
    let mut depth = 1; // the message's list
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        i += 1;
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth -= 1,
            b'-' | b'0'..=b'9' => {
                // A number: one the full decoder reads as a float (a
                // fraction, an exponent, more digits than an integer has)
                // must not overflow, which it refuses ("number out of
                // range"); serde_json's own reading decides.
                let start = i - 1;
                let len = text[start..]
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(text.len() - start);
                let number = &text[start..start + len];
                if (number.len() > 19 || number.iter().any(|c| matches!(c, b'.' | b'e' | b'E')))
                    && serde_json::from_slice::<f64>(number).is_err()
                {
                    return false;
                }
                i = start + len;
            }
            b'"' if text[i..].starts_with(b"\\u0000") => {
                let start = i + 6;
                let Some(len) = text[start..].iter().position(|&c| c == b'"' || c == b'\\') else {
                    return false;
                };
                if text[start + len] != b'"' || !base64_ok(&text[start..start + len]) {
                    return false;
                }
                i = start + len + 1;
            }
            b'"' => loop {
                match text.get(i) {
                    None => return false,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => i += 2,
                    Some(_) => i += 1,
                }
            },
            _ => {}
        }
    }
    true
}

thread_local! {
    /// Where base64 is decoded to check it (the bytes are not kept).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether `b64` decodes as the full decoder decodes it.
fn base64_ok(b64: &[u8]) -> bool {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let ok = B64.decode_vec(b64, buf).is_ok();
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        ok
    })
}

// --- MessagePack --------------------------------------------------------

fn msgpack(bytes: &[u8]) -> Option<Message> {
    let mut s = Skip { b: bytes, i: 0 };
    let n = match s.byte()? {
        m @ 0x90..=0x9f => usize::from(m & 0x0f),
        0xdc => s.len(2)?,
        0xdd => s.len(4)?,
        _ => return None,
    };
    // The elements before the arguments, read here as the full decoder
    // reads them (and within its depth): no serde on this path.
    let c = s.read(2)?;
    let at = c.as_u64().and_then(args_index)?;
    if n < at || n > at + 2 {
        return None;
    }
    let mut header = Vec::with_capacity(at);
    header.push(c);
    while header.len() < at {
        header.push(s.read(2)?);
    }
    let start = s.i;
    let args = if n == at {
        if start != bytes.len() {
            return None;
        }
        None
    } else {
        let mut s = Skip { b: bytes, i: start };
        if !s.container(true) {
            return None;
        }
        let mid = s.i;
        if n == at + 2 && !s.container(false) {
            return None;
        }
        if s.i != bytes.len() {
            return None;
        }
        Some((&bytes[start..mid], &bytes[mid..]))
    };
    // An empty fixarray and fixmap; longer forms of empty are forwarded.
    assemble(header, Serializer::MsgPack, args, |a, k| {
        a == [0x90] && (k.is_empty() || k == [0x80])
    })
}

/// A MessagePack reader that checks and skips values, accepting exactly
/// what the full decoder turns into values (strings in UTF-8, string keys,
/// no extension types, nesting within [`MAX_DEPTH`]).
struct Skip<'a> {
    b: &'a [u8],
    i: usize,
}

impl Skip<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    fn len(&mut self, width: usize) -> Option<usize> {
        let s = self.take(width)?;
        Some(s.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    }

    /// The top-level argument (a list, or with `list` false a dict) at the
    /// message's second level.
    fn container(&mut self, list: bool) -> bool {
        let Some(&m) = self.b.get(self.i) else {
            return false;
        };
        let is_list = matches!(m, 0x90..=0x9f | 0xdc | 0xdd);
        let is_map = matches!(m, 0x80..=0x8f | 0xde | 0xdf);
        (if list { is_list } else { is_map }) && self.value(2).is_some()
    }

    /// A string's length, if the next value is a string.
    fn str_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0xa0..=0xbf => Some(usize::from(m & 0x1f)),
            0xd9 => self.len(1),
            0xda => self.len(2),
            0xdb => self.len(4),
            _ => None,
        }
    }

    fn string(&mut self, n: usize) -> Option<()> {
        std::str::from_utf8(self.take(n)?).ok().map(drop)
    }

    /// The length of the bin, list or map whose marker `m` was just read,
    /// and whether it is a map; `None` for any other marker (extension
    /// types, which the full decoder refuses, naming them, and the
    /// reserved 0xc1) or a length cut short.
    fn sized(&mut self, m: u8) -> Option<(usize, bool)> {
        Some(match m {
            0xc4 => (self.len(1)?, false),
            0xc5 => (self.len(2)?, false),
            0xc6 => (self.len(4)?, false),
            0x90..=0x9f => (usize::from(m & 0x0f), false),
            0xdc => (self.len(2)?, false),
            0xdd => (self.len(4)?, false),
            0x80..=0x8f => (usize::from(m & 0x0f), true),
            0xde => (self.len(2)?, true),
            0xdf => (self.len(4)?, true),
            _ => return None,
        })
    }

    /// A string: its length was read.
    fn text(&mut self, n: usize) -> Option<String> {
        std::str::from_utf8(self.take(n)?).ok().map(str::to_owned)
    }

    /// One value at nesting `level` (the message's list is level 1), as
    /// the full decoder gives it; `None` for anything it would refuse or
    /// read otherwise (a string that is not UTF-8, which it reads as
    /// binary), which the full decoder then decides.
    fn read(&mut self, level: usize) -> Option<Value> {
        let m = *self.b.get(self.i)?;
        if let 0xa0..=0xbf | 0xd9..=0xdb = m {
            let n = self.str_len()?;
            return self.text(n).map(Value::Str);
        }
        self.i += 1;
        let int = |s: &[u8]| s.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let (items, pairs) = match m {
            0x00..=0x7f => return Some(Value::Int(i64::from(m))),
            0xe0..=0xff => return Some(Value::Int(i64::from(m as i8))),
            0xc0 => return Some(Value::Null),
            0xc2 => return Some(Value::Bool(false)),
            0xc3 => return Some(Value::Bool(true)),
            0xcc => return self.take(1).map(|b| Value::Int(i64::from(b[0]))),
            0xcd => return self.take(2).map(|b| Value::Int(int(b) as i64)),
            0xce => return self.take(4).map(|b| Value::Int(int(b) as i64)),
            0xcf => return self.take(8).map(|b| Value::from(int(b))),
            0xd0 => return self.take(1).map(|b| Value::Int(i64::from(b[0] as i8))),
            0xd1 => {
                return self
                    .take(2)
                    .map(|b| Value::Int(i64::from(int(b) as u16 as i16)));
            }
            0xd2 => {
                return self
                    .take(4)
                    .map(|b| Value::Int(i64::from(int(b) as u32 as i32)));
            }
            0xd3 => return self.take(8).map(|b| Value::Int(int(b) as i64)),
            0xca => {
                return self
                    .take(4)
                    .map(|b| Value::Float(f64::from(f32::from_bits(int(b) as u32))));
            }
            0xcb => return self.take(8).map(|b| Value::Float(f64::from_bits(int(b)))),
            _ => self.sized(m)?,
        };
        match m {
            0xc4..=0xc6 => self.take(items).map(|b| Value::Bytes(b.to_vec())),
            _ if level > MAX_DEPTH => None,
            _ if pairs => {
                let mut dict = Dict::new();
                for _ in 0..items {
                    let n = self.str_len()?;
                    let key = self.text(n)?;
                    // A key sent twice: the last one stands, as in the
                    // full decoder.
                    dict.insert(key, self.read(level + 1)?);
                }
                Some(Value::Dict(dict))
            }
            _ => {
                // Each element takes a byte at least: no more room than
                // the bytes left, whatever the length says.
                let mut list = Vec::with_capacity(items.min(self.b.len() - self.i));
                for _ in 0..items {
                    list.push(self.read(level + 1)?);
                }
                Some(Value::List(list))
            }
        }
    }

    /// One value at nesting `level` (the message's list is level 1).
    fn value(&mut self, level: usize) -> Option<()> {
        let m = *self.b.get(self.i)?;
        if let 0xa0..=0xbf | 0xd9..=0xdb = m {
            let n = self.str_len()?;
            return self.string(n);
        }
        self.i += 1;
        let (items, pairs) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => return Some(()),
            0xcc | 0xd0 => return self.take(1).map(drop),
            0xcd | 0xd1 => return self.take(2).map(drop),
            0xca | 0xce | 0xd2 => return self.take(4).map(drop),
            0xcb | 0xcf | 0xd3 => return self.take(8).map(drop),
            _ => self.sized(m)?,
        };
        match m {
            0xc4..=0xc6 => self.take(items).map(drop),
            _ if level > MAX_DEPTH => None,
            _ => {
                for _ in 0..items {
                    if pairs {
                        let n = self.str_len()?;
                        self.string(n)?;
                    }
                    self.value(level + 1)?;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Payload;

    fn both(ser: Serializer, bytes: &[u8]) -> (Message, Message) {
        let fast = ser.decode_forwarding(bytes).expect("decodes");
        let full = ser.decode(bytes).expect("decodes");
        (fast, full)
    }

    /// Refused by the forwarding decoder with the full decoder's error.
    fn same_error(ser: Serializer, bytes: &[u8]) {
        assert_eq!(
            ser.decode_forwarding(bytes).unwrap_err().to_string(),
            ser.decode(bytes).unwrap_err().to_string(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }

    fn raw(m: &Message) -> Option<&RawArgs> {
        m.payload().and_then(|p| p.raw.as_ref())
    }

    /// The raw payload, decoded, is the full decoder's; re-encoding in the
    /// same serializer gives the bytes that came in.
    #[test]
    fn raw_arguments_match_the_full_decoder_and_are_forwarded_as_they_came() {
        let json = br#"[48,7,{"receive_progress":true},"com.app.f",[1,"\u0000AAEC",{"x":[null,2.5]}],{"k":"v"}]"#;
        let (fast, full) = both(Serializer::Json, json);
        let r = raw(&fast).expect("kept raw");
        assert_eq!(r.args(), br#"[1,"\u0000AAEC",{"x":[null,2.5]}]"#);
        assert_eq!(r.kwargs(), Some(&br#"{"k":"v"}"#[..]));
        let mut decoded = fast.clone();
        decoded.payload_mut().unwrap().decode_raw().unwrap();
        assert_eq!(decoded, full);
        assert_eq!(
            Serializer::Json.encode_to_vec(&fast).unwrap(),
            json.to_vec()
        );
        // To another serializer: converted, as the full message would be.
        assert_eq!(
            Serializer::MsgPack.encode_to_vec(&fast).unwrap(),
            Serializer::MsgPack.encode_to_vec(&full).unwrap()
        );
        assert_eq!(
            Serializer::Cbor.encode_to_vec(&fast).unwrap(),
            Serializer::Cbor.encode_to_vec(&full).unwrap()
        );

        let mp = Serializer::MsgPack.encode_to_vec(&full).unwrap();
        let (fast, full2) = both(Serializer::MsgPack, &mp);
        assert!(raw(&fast).is_some());
        assert_eq!(
            fast.payload().unwrap().decoded().unwrap().into_owned(),
            *full2.payload().unwrap()
        );
        assert_eq!(Serializer::MsgPack.encode_to_vec(&fast).unwrap(), mp);
        assert_eq!(
            Serializer::Json.encode_to_vec(&fast).unwrap(),
            Serializer::Json.encode_to_vec(&full).unwrap()
        );
    }

    #[test]
    fn every_forwarded_type_keeps_its_arguments_and_others_decode_in_full() {
        for text in [
            r#"[16,1,{},"t",[1]]"#,
            r#"[70,1,{},[1],{"a":1}]"#,
            r#"[8,48,1,{},"com.app.error",["why"]]"#,
            r#"[48,1,{},"p",[],{"a":1}]"#,
            r#"[50,1,{},[1]]"#,
        ] {
            let (fast, full) = both(Serializer::Json, text.as_bytes());
            assert!(raw(&fast).is_some(), "{text}");
            assert_eq!(
                Serializer::Json.encode_to_vec(&fast).unwrap(),
                text.as_bytes(),
                "{text}"
            );
            let mut d = fast.clone();
            d.payload_mut().unwrap().decode_raw().unwrap();
            assert_eq!(d, full, "{text}");
        }
        for text in [
            r#"[48,1,{},"p"]"#,
            r#"[48,1,{},"p",[]]"#,
            r#"[48,1,{},"p",[ ],{}]"#,
            r#"[32,1,{},"t"]"#,
            r#"[48,1,{"ppt_scheme":"x"},"p","\u0000AAEC"]"#,
        ] {
            let (fast, full) = both(Serializer::Json, text.as_bytes());
            assert!(raw(&fast).is_none(), "{text}");
            assert_eq!(fast, full, "{text}");
        }
        let empty = Serializer::MsgPack
            .encode_to_vec(&Serializer::Json.decode(br#"[48,1,{},"p",[],{}]"#).unwrap())
            .unwrap();
        let mut with_empty = empty.clone();
        with_empty[0] = 0x96; // six elements: the encoder left out the empty ones
        with_empty.extend_from_slice(&[0x90, 0x80]);
        let (fast, full) = both(Serializer::MsgPack, &with_empty);
        assert!(raw(&fast).is_none());
        assert_eq!(fast, full);
        assert_eq!(full.payload(), Some(&Payload::default()));
    }

    /// What the fast path does not take reads exactly as the full
    /// decoder's error.
    #[test]
    fn bad_input_gets_the_full_decoders_error() {
        // The message's list and 99 more: the limit; 100 more: past it.
        let deep = format!(r#"[48,1,{{}},"p",{}1{}]"#, "[".repeat(100), "]".repeat(100));
        let ok = format!(r#"[48,1,{{}},"p",{}1{}]"#, "[".repeat(99), "]".repeat(99));
        let cases: Vec<Vec<u8>> = vec![
            br#"[48,1,{},"p",["\u0000not base64!"]]"#.to_vec(),
            br#"[48,1,{},"p",{"a":1}]"#.to_vec(),
            br#"[48,1,{},"p",[1],[2]]"#.to_vec(),
            br#"[48,1,{},"p",[1],{},3]"#.to_vec(),
            br#"[48,1,{},"p",[1]"#.to_vec(),
            br#"[48,1,{},7,[1]]"#.to_vec(),
            br#"[48,0,{},"p",[1]]"#.to_vec(),
            br#"[48,1,{},"p",[1]] x"#.to_vec(),
            b"[48,1,{},\"p\",[\"\xff\"]]".to_vec(),
            deep.into_bytes(),
        ];
        for bytes in &cases {
            let fast = Serializer::Json.decode_forwarding(bytes);
            let full = Serializer::Json.decode(bytes);
            assert!(full.is_err(), "{}", String::from_utf8_lossy(bytes));
            assert_eq!(
                fast.unwrap_err().to_string(),
                full.unwrap_err().to_string(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(raw(&Serializer::Json.decode_forwarding(ok.as_bytes()).unwrap()).is_some());
        // A binary with an escape in its base64 part: the full decoder's.
        let esc = br#"[48,1,{},"p",["\u0000AA\u0045C"]]"#;
        let (fast, full) = both(Serializer::Json, esc);
        assert!(raw(&fast).is_none());
        assert_eq!(fast, full);
    }

    #[test]
    fn bad_messagepack_gets_the_full_decoders_error() {
        let good = Serializer::MsgPack
            .encode_to_vec(
                &Serializer::Json
                    .decode(br#"[48,1,{},"p",["s"],{"k":1}]"#)
                    .unwrap(),
            )
            .unwrap();
        let mut cases = Vec::new();
        // An extension value in args.
        let mut ext = good.clone();
        let at = ext.windows(2).position(|w| w == [0xa1, b's']).unwrap();
        ext.splice(at..at + 2, [0xd4, 0x01, 0x00]);
        cases.push(ext);
        // A string that is not UTF-8.
        let mut bad_utf8 = good.clone();
        bad_utf8[at + 1] = 0xff;
        cases.push(bad_utf8);
        // Cut short, and a trailing byte.
        cases.push(good[..good.len() - 1].to_vec());
        let mut trailing = good.clone();
        trailing.push(0xc0);
        cases.push(trailing);
        // A dict key that is not a string.
        let mut int_key = good.clone();
        let k = int_key.len() - 3; // fixmap(1), "k", 1
        int_key[k] = 0x05;
        int_key.remove(k + 1);
        cases.push(int_key);
        for bytes in &cases {
            let fast = Serializer::MsgPack.decode_forwarding(bytes);
            let full = Serializer::MsgPack.decode(bytes);
            match (fast, full) {
                (Ok(f), Ok(g)) => {
                    // Taken by the full decoder too (a non-UTF-8 string is
                    // bytes there): then the fast path took none of it raw.
                    assert!(raw(&f).is_none(), "{bytes:02x?}");
                    assert_eq!(f, g);
                }
                (Err(f), Err(g)) => assert_eq!(f.to_string(), g.to_string(), "{bytes:02x?}"),
                (f, g) => panic!("{bytes:02x?}: fast {f:?}, full {g:?}"),
            }
        }
        let (fast, _) = both(Serializer::MsgPack, &good);
        assert!(raw(&fast).is_some());
    }

    /// A number the full decoder refuses (a float out of range) is its
    /// business; numbers it reads are forwarded as they came.
    #[test]
    fn json_numbers_out_of_range_get_the_full_decoders_error() {
        for bad in [
            &br#"[48,1,{},"p",[1e400]]"#[..],
            br#"[48,1,{},"p",[1],{"k":-2E+999}]"#,
        ] {
            same_error(Serializer::Json, bad);
        }
        let fine = br#"[48,1,{},"p",[1.5e3,-0.25,123456789012345678901234,7]]"#;
        let (fast, full) = both(Serializer::Json, fine);
        assert!(raw(&fast).is_some());
        assert_eq!(
            fast.payload().unwrap().decoded().unwrap().into_owned(),
            *full.payload().unwrap()
        );
    }

    /// The elements before the arguments are read without serde: every
    /// MessagePack form other encoders send (each integer width, signed
    /// and unsigned, above `i64::MAX`, 32-bit floats, the long string, bin,
    /// list and map forms, a key sent twice) reads as the full decoder
    /// reads it.
    #[test]
    fn messagepack_headers_read_as_the_full_decoder_reads_them() {
        let forms: Vec<Vec<u8>> = vec![
            vec![0x07],
            vec![0xff],
            vec![0xc0],
            vec![0xc2],
            vec![0xc3],
            vec![0xcc, 0xfe],
            vec![0xcd, 0x01, 0x02],
            vec![0xce, 0xff, 0xff, 0xff, 0xff],
            vec![0xcf, 0xff, 0, 0, 0, 0, 0, 0, 1],
            vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 9],
            vec![0xd0, 0x80],
            vec![0xd1, 0xff, 0x00],
            vec![0xd2, 0x80, 0, 0, 0],
            vec![0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            vec![0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
            vec![0xca, 0x3f, 0xc0, 0, 0],
            vec![0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
            vec![0xd9, 2, b'h', b'i'],
            vec![0xda, 0, 1, b'x'],
            vec![0xdb, 0, 0, 0, 1, b'y'],
            vec![0xa0],
            vec![0xc4, 2, 1, 2],
            vec![0xc5, 0, 1, 9],
            vec![0xc6, 0, 0, 0, 0],
            vec![0x92, 0x01, 0xa1, b'a'],
            vec![0xdc, 0, 1, 0xc0],
            vec![0xdd, 0, 0, 0, 0],
            vec![0x82, 0xa1, b'k', 0x01, 0xa1, b'k', 0x02],
            vec![0xde, 0, 1, 0xa1, b'z', 0x90],
            vec![0xdf, 0, 0, 0, 0],
        ];
        for form in &forms {
            // CALL with the form as an option's value, and as the request
            // id (refused by both when it is not one).
            let mut call = vec![0x95, 48, 1, 0x81, 0xa1, b'o'];
            call.extend(form);
            call.extend([0xa1, b'p', 0x91, 0x01]);
            let mut as_id = vec![0x95, 48];
            as_id.extend(form);
            as_id.extend([0x80, 0xa1, b'p', 0x91, 0x01]);
            let mut long_list = vec![0xdc, 0, 5, 48, 1, 0x81, 0xa1, b'o'];
            long_list.extend(form);
            long_list.extend([0xa1, b'p', 0x91, 0x01]);
            for bytes in [call, as_id, long_list] {
                let fast = Serializer::MsgPack.decode_forwarding(&bytes);
                let full = Serializer::MsgPack.decode(&bytes);
                match (fast, full) {
                    (Ok(mut f), Ok(g)) => {
                        if let Some(p) = f.payload_mut() {
                            p.decode_raw().unwrap();
                        }
                        assert_eq!(f, g, "{bytes:02x?}");
                    }
                    (Err(f), Err(g)) => assert_eq!(f.to_string(), g.to_string(), "{bytes:02x?}"),
                    (f, g) => panic!("{bytes:02x?}: fast {f:?}, full {g:?}"),
                }
            }
        }
        // Not vacuous: the header reader took a CALL with each form.
        let mut call = vec![0x95, 48, 1, 0x81, 0xa1, b'o', 0xca, 0x3f, 0xc0, 0, 0];
        call.extend([0xa1, b'p', 0x91, 0x01]);
        assert_eq!(
            msgpack(&call)
                .and_then(|m| m.payload().cloned())
                .map(|p| p.raw.is_some()),
            Some(true)
        );
        // Options nested to the limit, and one deeper.
        let nest = |n: usize| {
            let mut b = vec![0x95, 48, 1];
            b.extend(std::iter::repeat_n([0x81, 0xa1, b'o'], n).flatten());
            b.push(0x01);
            b.extend([0xa1, b'p', 0x91, 0x01]);
            b
        };
        assert!(msgpack(&nest(MAX_DEPTH - 1)).is_some());
        let deep = nest(MAX_DEPTH);
        assert!(msgpack(&deep).is_none());
        same_error(Serializer::MsgPack, &deep);
    }

    #[test]
    fn messagepack_nesting_is_limited_like_the_full_decoders() {
        let nest = |n: usize| {
            let mut b = vec![0x95, 48, 1, 0x80, 0xa1, b'p'];
            b.extend(std::iter::repeat_n(0x91, n));
            b.push(0x01);
            b
        };
        // The message's list and n lists: depth n + 1.
        let fine = nest(MAX_DEPTH - 1);
        assert!(raw(&Serializer::MsgPack.decode_forwarding(&fine).unwrap()).is_some());
        let deep = nest(MAX_DEPTH);
        same_error(Serializer::MsgPack, &deep);
    }
}
