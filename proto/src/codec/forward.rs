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
use std::io::Cursor;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::wire::OwnedValue;
use super::{MAX_DEPTH, Serializer, check_depth};
use crate::errors::DecodeError;
use crate::message::{Message, RawArgs, code};
use crate::value::Value;

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

/// The message from its elements before the arguments, with the
/// arguments (if any) as they came. An empty `args` without `kwargs` is
/// no payload, as the full decoder has it.
fn assemble(
    header: Vec<Value>,
    serializer: Serializer,
    args: Option<(&[u8], &[u8])>,
    empty: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<Message> {
    let header = Value::List(header);
    check_depth(&header, "").ok()?;
    let Value::List(header) = header else {
        return None;
    };
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
    assemble(parts.header, Serializer::Json, args, |a, k| {
        blank(a) && (k.is_empty() || blank(k))
    })
}

/// Whether valid JSON `text` (an element of a message) decodes as the full
/// decoder would have it: nested within [`MAX_DEPTH`] (the message's own
/// list counts), and every string that starts with `\u0000` is base64.
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
    let mut rest = bytes;
    let n = rmp::decode::read_array_len(&mut rest).ok()? as usize;
    let head = bytes.len() - rest.len();
    let mut de = rmp_serde::Deserializer::new(Cursor::new(rest));
    let OwnedValue::<false>(c) = OwnedValue::deserialize(&mut de).ok()?;
    let at = c.as_u64().and_then(args_index)?;
    if n < at || n > at + 2 {
        return None;
    }
    let mut header = Vec::with_capacity(at);
    header.push(c);
    while header.len() < at {
        let OwnedValue::<false>(v) = OwnedValue::deserialize(&mut de).ok()?;
        header.push(v);
    }
    let start = head + usize::try_from(de.position()).ok()?;
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
            0xc4 => (self.len(1)?, false),
            0xc5 => (self.len(2)?, false),
            0xc6 => (self.len(4)?, false),
            0x90..=0x9f => (usize::from(m & 0x0f), false),
            0xdc => (self.len(2)?, false),
            0xdd => (self.len(4)?, false),
            0x80..=0x8f => (usize::from(m & 0x0f), true),
            0xde => (self.len(2)?, true),
            0xdf => (self.len(4)?, true),
            // Extension types (which the full decoder refuses, naming
            // them) and the reserved 0xc1.
            _ => return None,
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
        assert_eq!(
            Serializer::MsgPack
                .decode_forwarding(&deep)
                .unwrap_err()
                .to_string(),
            Serializer::MsgPack.decode(&deep).unwrap_err().to_string()
        );
    }
}
