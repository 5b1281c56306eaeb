use proptest::prelude::*;

use super::*;
use crate::message::*;
use crate::value::Dict;

fn arb_value() -> impl Strategy<Value = crate::Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        // NaN has no JSON form and never equals itself; infinities neither.
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::Float),
        "\\PC{0,12}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6).prop_map(Value::Dict),
        ]
    })
}

fn arb_dict() -> impl Strategy<Value = Dict> {
    proptest::collection::btree_map("[a-z_]{1,8}", arb_value(), 0..4)
}

/// Options: a null option is decoded as an absent one, so none is null.
fn arb_options() -> impl Strategy<Value = Dict> {
    arb_dict().prop_map(|mut d| {
        d.retain(|_, v| !v.is_null());
        d
    })
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        4 => (proptest::collection::vec(arb_value(), 0..4), arb_dict())
            .prop_map(|(args, kwargs)| Payload { args, kwargs, passthru: None, raw: None }),
        1 => proptest::collection::vec(any::<u8>(), 0..32)
            .prop_map(|b| Payload { passthru: Some(b), ..Payload::default() }),
    ]
}

fn arb_id() -> impl Strategy<Value = Id> {
    1..=MAX_ID
}

fn arb_uri() -> impl Strategy<Value = String> {
    "[a-z]{1,6}(\\.[a-z_0-9]{1,6}){0,3}"
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_uri(), arb_dict())
            .prop_map(|(realm, details)| Message::Hello(Hello { realm, details })),
        (arb_id(), arb_dict())
            .prop_map(|(session, details)| Message::Welcome(Welcome { session, details })),
        (arb_dict(), arb_uri())
            .prop_map(|(details, reason)| Message::Abort(Abort { details, reason })),
        ("\\PC{0,10}", arb_dict())
            .prop_map(|(authmethod, extra)| Message::Challenge(Challenge { authmethod, extra })),
        ("\\PC{0,10}", arb_dict()).prop_map(|(signature, extra)| Message::Authenticate(
            Authenticate { signature, extra }
        )),
        (arb_dict(), arb_uri())
            .prop_map(|(details, reason)| Message::Goodbye(Goodbye { details, reason })),
        (
            prop_oneof![Just(16u64), Just(32), Just(48), Just(68)],
            arb_id(),
            arb_dict(),
            arb_uri(),
            arb_payload()
        )
            .prop_map(
                |(request_type, request, details, error, payload)| Message::Error(WampError {
                    request_type,
                    request,
                    details,
                    error,
                    payload
                })
            ),
        (arb_id(), arb_options(), arb_uri(), arb_payload()).prop_map(
            |(request, options, topic, payload)| Message::Publish(Publish {
                request,
                options,
                topic,
                payload
            })
        ),
        (arb_id(), arb_id()).prop_map(|(request, publication)| Message::Published(Published {
            request,
            publication
        })),
        (arb_id(), arb_options(), arb_uri()).prop_map(|(request, options, topic)| {
            Message::Subscribe(Subscribe {
                request,
                options,
                topic,
            })
        }),
        (arb_id(), arb_id()).prop_map(|(request, subscription)| Message::Subscribed(Subscribed {
            request,
            subscription
        })),
        (arb_id(), arb_id()).prop_map(|(request, subscription)| Message::Unsubscribe(
            Unsubscribe {
                request,
                subscription
            }
        )),
        (arb_id(), proptest::option::of(arb_dict())).prop_map(|(request, details)| {
            Message::Unsubscribed(Unsubscribed { request, details })
        }),
        (arb_id(), arb_id(), arb_dict(), arb_payload()).prop_map(
            |(subscription, publication, details, payload)| Message::Event(Event {
                subscription,
                publication,
                details,
                payload
            })
        ),
        (arb_id(), arb_options(), arb_uri(), arb_payload()).prop_map(
            |(request, options, procedure, payload)| Message::Call(Call {
                request,
                options,
                procedure,
                payload
            })
        ),
        (arb_id(), arb_options())
            .prop_map(|(request, options)| Message::Cancel(Cancel { request, options })),
        (arb_id(), arb_dict(), arb_payload()).prop_map(|(request, details, payload)| {
            Message::Result(CallResult {
                request,
                details,
                payload,
            })
        }),
        (arb_id(), arb_options(), arb_uri()).prop_map(|(request, options, procedure)| {
            Message::Register(Register {
                request,
                options,
                procedure,
            })
        }),
        (arb_id(), arb_id()).prop_map(|(request, registration)| Message::Registered(Registered {
            request,
            registration
        })),
        (arb_id(), arb_id()).prop_map(|(request, registration)| Message::Unregister(Unregister {
            request,
            registration
        })),
        (arb_id(), proptest::option::of(arb_dict())).prop_map(|(request, details)| {
            Message::Unregistered(Unregistered { request, details })
        }),
        (arb_id(), arb_id(), arb_dict(), arb_payload()).prop_map(
            |(request, registration, details, payload)| Message::Invocation(Invocation {
                request,
                registration,
                details,
                payload
            })
        ),
        (arb_id(), arb_options())
            .prop_map(|(request, options)| Message::Interrupt(Interrupt { request, options })),
        (arb_id(), arb_options(), arb_payload()).prop_map(|(request, options, payload)| {
            Message::Yield(Yield {
                request,
                options,
                payload,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips_in_every_serializer(msg in arb_message()) {
        for s in Serializer::ALL {
            let bytes = s.encode_to_vec(&msg).expect("encode");
            let back = s.decode(&bytes).unwrap_or_else(|e| panic!("{s:?} decode failed: {e} for {msg:?}"));
            prop_assert_eq!(&back, &msg, "serializer {:?}", s);
        }
    }

    /// The forwarding decoder ([`Serializer::decode_forwarding`]) gives the
    /// full decoder's message once its raw arguments are decoded, and every
    /// serializer encodes it to the same bytes.
    #[test]
    fn forwarding_decodes_as_the_full_decoder(msg in arb_message()) {
        for s in Serializer::ALL {
            let bytes = s.encode_to_vec(&msg).expect("encode");
            let fast = s.decode_forwarding(&bytes).unwrap_or_else(|e| panic!("{s:?} decode failed: {e} for {msg:?}"));
            for to in Serializer::ALL {
                prop_assert_eq!(to.encode_to_vec(&fast).expect("encode"), to.encode_to_vec(&msg).expect("encode"), "{:?} to {:?}", s, to);
            }
            let mut decoded = fast;
            if let Some(p) = decoded.payload_mut() {
                p.decode_raw().expect("raw arguments decode");
            }
            prop_assert_eq!(&decoded, &msg, "serializer {:?}", s);
        }
    }

    /// MessagePack is written without serde, byte for byte as rmp-serde
    /// writes it through the serde bridge: every message, with its
    /// arguments decoded or held raw in JSON (decoded on the way), and
    /// every value.
    #[test]
    fn messagepack_is_written_as_rmp_serde_writes_it(msg in arb_message(), v in arb_value()) {
        let serde_form = |m: &Message| rmp_serde::encode::to_vec(&super::wire::WireMessage::<false>(m)).expect("encode");
        prop_assert_eq!(Serializer::MsgPack.encode_to_vec(&msg).expect("encode"), serde_form(&msg));
        let json = Serializer::Json.encode_to_vec(&msg).expect("encode");
        let raw = Serializer::Json.decode_forwarding(&json).expect("decode");
        prop_assert_eq!(Serializer::MsgPack.encode_to_vec(&raw).expect("encode"), serde_form(&raw));
        let mut out = Vec::new();
        Serializer::MsgPack.encode_value(&v, &mut out).expect("encode");
        prop_assert_eq!(out, rmp_serde::encode::to_vec(&super::wire::WireValue::<false>(&v)).expect("encode"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for s in Serializer::ALL {
            let _ = s.decode(&bytes);
            let _ = s.decode_forwarding(&bytes);
        }
    }

    #[test]
    fn mutated_messages_never_panic(msg in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        for s in Serializer::ALL {
            let mut bytes = s.encode_to_vec(&msg).expect("encode");
            for (pos, b) in &flips {
                let n = bytes.len();
                bytes[pos % n] = *b;
            }
            let fast = s.decode_forwarding(&bytes).map_err(|e| e.to_string());
            let full = s.decode(&bytes).map_err(|e| e.to_string());
            match (&fast, &full) {
                (Ok(f), Ok(g)) => {
                    let mut f = f.clone();
                    if let Some(p) = f.payload_mut() {
                        let _ = p.decode_raw();
                    }
                    prop_assert_eq!(&f, g);
                }
                _ => prop_assert_eq!(fast.err(), full.err()),
            }
            bytes.truncate(bytes.len() / 2);
            let _ = s.decode(&bytes);
            let _ = s.decode_forwarding(&bytes);
        }
    }
}

#[test]
fn json_matches_autobahn_wire_form() {
    let msg = Message::Call(Call {
        request: 7,
        options: Dict::new(),
        procedure: "com.x.add".into(),
        payload: Payload::args(vec![Value::Int(1), Value::Bytes(vec![0, 1, 2])]),
    });
    let text = String::from_utf8(Serializer::Json.encode_to_vec(&msg).unwrap()).unwrap();
    assert_eq!(text, "[48,7,{},\"com.x.add\",[1,\"\\u0000AAEC\"]]");
    // kwargs only: args becomes [].
    let msg = Message::Yield(Yield {
        request: 1,
        options: Dict::new(),
        payload: Payload {
            kwargs: crate::dict! {"a" => 1i64},
            ..Payload::default()
        },
    });
    let text = String::from_utf8(Serializer::Json.encode_to_vec(&msg).unwrap()).unwrap();
    assert_eq!(text, "[70,1,{},[],{\"a\":1}]");
    // No payload: nothing after the fixed fields.
    let msg = Message::Published(Published {
        request: 3,
        publication: 9,
    });
    assert_eq!(Serializer::Json.encode_to_vec(&msg).unwrap(), b"[17,3,9]");
}

#[test]
fn msgpack_carries_bytes_as_bin() {
    let msg = Message::Event(Event {
        subscription: 1,
        publication: 2,
        details: Dict::new(),
        payload: Payload::args(vec![Value::Bytes(vec![0xff; 3])]),
    });
    let bytes = Serializer::MsgPack.encode_to_vec(&msg).unwrap();
    // fixarray(5) 36 1 2 fixmap(0) fixarray(1) bin8(3) ff ff ff
    assert_eq!(
        bytes,
        [0x95, 36, 1, 2, 0x80, 0x91, 0xc4, 3, 0xff, 0xff, 0xff]
    );
}

#[test]
fn passthru_payload_is_one_binary_element() {
    let msg = Message::Publish(Publish {
        request: 1,
        options: crate::dict! {"ppt_scheme" => "x_test"},
        topic: "t".into(),
        payload: Payload {
            passthru: Some(vec![0, 0xff]),
            ..Payload::default()
        },
    });
    let text = String::from_utf8(Serializer::Json.encode_to_vec(&msg).unwrap()).unwrap();
    assert_eq!(
        text,
        "[16,1,{\"ppt_scheme\":\"x_test\"},\"t\",\"\\u0000AP8=\"]"
    );
    assert_eq!(Serializer::Json.decode(text.as_bytes()).unwrap(), msg);
    // Nothing may follow a passthru binary.
    assert!(
        Serializer::Json
            .decode(b"[16,1,{},\"t\",\"\\u0000AP8=\",{}]")
            .is_err()
    );
}

#[test]
fn decode_errors_name_the_field() {
    let e = Serializer::Json
        .decode(br#"[16, 1, "x", "com.t"]"#)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "PUBLISH element 3 (Options) must be a dict, found string"
    );
    let e = Serializer::Json.decode(br#"[48, 1, {}]"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "CALL element 4 (Procedure) must be a string, the message ended"
    );
    let e = Serializer::Json.decode(br#"[99, 1]"#).unwrap_err();
    assert_eq!(e, DecodeError::UnknownType(99));
    let e = Serializer::Json
        .decode(br#"[32, 0, {}, "a.b"]"#)
        .unwrap_err();
    assert!(e.to_string().contains("between 1 and 2^53, found 0"), "{e}");
    let e = Serializer::Json
        .decode(br#"[32, 9007199254740993, {}, "a.b"]"#)
        .unwrap_err();
    assert!(e.to_string().contains("between 1 and 2^53"), "{e}");
    let e = Serializer::Json.decode(br#"[17, 1, 2, 3]"#).unwrap_err();
    assert!(e.to_string().contains("trailing"), "{e}");
    let e = Serializer::Json.decode(br#"{"a": 1}"#).unwrap_err();
    assert!(e.to_string().contains("must be a list"), "{e}");
    let e = Serializer::Json
        .decode(br#"[1, "realm1", {}] x"#)
        .unwrap_err();
    assert!(matches!(e, DecodeError::Syntax { .. }), "{e}");
    let e = Serializer::Json
        .decode(b"[16, 1, {}, \"t\", [\"\\u0000!!\"]]")
        .unwrap_err();
    assert!(e.to_string().contains("base64"), "{e}");
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for depth in [MAX_DEPTH + 5, 100_000] {
        let json = format!(
            "[16,1,{{}},\"t\",[{}{}]]",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(Serializer::Json.decode(json.as_bytes()).is_err());
        let mut mp = vec![0x95, 16, 1, 0x80, 0xa1, b't'];
        mp.extend(std::iter::repeat_n(0x91u8, depth));
        mp.push(0xc0);
        assert!(Serializer::MsgPack.decode(&mp).is_err());
        let mut cb = vec![0x85, 16, 1, 0xa0, 0x61, b't'];
        cb.extend(std::iter::repeat_n(0x81u8, depth));
        cb.push(0xf6);
        let e = Serializer::Cbor.decode(&cb).unwrap_err();
        // Errors are not wrapped once per level (ciborium escapes the
        // message it wraps: that would double at every level).
        assert!(e.to_string().len() < 300, "{e}");
    }
}

#[test]
fn hostile_length_prefixes_do_not_allocate() {
    // msgpack array32 claiming 4 billion elements, then nothing.
    assert!(
        Serializer::MsgPack
            .decode(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .is_err()
    );
    // CBOR array with a 2^63 length, and a byte string claiming 2^63 bytes.
    assert!(
        Serializer::Cbor
            .decode(&[0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .is_err()
    );
    assert!(
        Serializer::Cbor
            .decode(&[0x81, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .is_err()
    );
    // msgpack map keyed by an integer.
    assert!(
        Serializer::MsgPack
            .decode(&[0x93, 1, 0xa1, b'r', 0x81, 1, 2])
            .is_err()
    );
}

/// What wampy.js sends: cbor-x tags every `Uint8Array` (RFC 8746 tag 64),
/// and integers above 2^32 arrive as float64.
#[test]
fn cbor_typed_arrays_are_binary_and_integral_floats_are_ids() {
    // [48, 7, {}, "com.echo", [64(h'0102ff')]]
    let call = [
        0x85, 0x18, 48, 0x07, 0xa0, 0x68, b'c', b'o', b'm', b'.', b'e', b'c', b'h', b'o', 0x81,
        0xd8, 64, 0x43, 1, 2, 0xff,
    ];
    match Serializer::Cbor.decode(&call).unwrap() {
        Message::Call(c) => assert_eq!(c.payload.args, vec![Value::Bytes(vec![1, 2, 0xff])]),
        other => panic!("{other:?}"),
    }
    // Tag 72 (int8 array) is bytes too; tag 1 (epoch time) is its value.
    let tagged = [0x82, 0xd8, 72, 0x41, 0x80, 0xc1, 0x1a, 0, 1, 0, 0];
    let v = super::cbor::decode(&tagged, true).unwrap();
    assert_eq!(
        v,
        Value::List(vec![Value::Bytes(vec![0x80]), Value::Int(65536)])
    );
    // A typed array around anything but bytes is refused, saying so.
    let e = Serializer::Cbor
        .decode(&[0x82, 0x18, 48, 0xd8, 64, 0x01])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("CBOR tag 64 (an RFC 8746 typed array) must wrap a byte string"),
        "{e}"
    );
    // [33, 5.0e9 as float64, 7.0]: SUBSCRIBED with float ids.
    let mut sub = vec![0x83, 0x18, 33, 0xfb];
    sub.extend_from_slice(&5.0e9f64.to_be_bytes());
    sub.push(0xfb);
    sub.extend_from_slice(&7.0f64.to_be_bytes());
    assert_eq!(
        Serializer::Cbor.decode(&sub).unwrap(),
        Message::Subscribed(Subscribed {
            request: 5_000_000_000,
            subscription: 7
        })
    );
    // Not exact, or beyond 2^53: not an id.
    let e = Serializer::Json.decode(b"[33, 1.5, 7]").unwrap_err();
    assert!(
        e.to_string().contains("SUBSCRIBED element 2 (Request)"),
        "{e}"
    );
    assert!(Serializer::Json.decode(b"[33, 1e17, 7]").is_err());
}

#[test]
fn null_options_are_absent_and_a_null_realm_is_empty() {
    let m = Serializer::Json
        .decode(br#"[32, 1, {"match": null, "get_retained": true}, "com.t"]"#)
        .unwrap();
    match m {
        Message::Subscribe(s) => {
            assert_eq!(s.options, crate::dict! {"get_retained" => true});
        }
        other => panic!("{other:?}"),
    }
    match Serializer::Json
        .decode(br#"[1, null, {"roles": {}}]"#)
        .unwrap()
    {
        Message::Hello(h) => assert_eq!(h.realm, ""),
        other => panic!("{other:?}"),
    }
}

/// Decode errors say where: the message type and element, and what was
/// found there (wampy.js's MessagePack sends `undefined` as an extension).
#[test]
fn decode_errors_say_what_was_found_where() {
    // [48, 1, {}, "com.x", [1, ext(-1, 0x00)]]
    let call = [
        0x95, 48, 1, 0x80, 0xa5, b'c', b'o', b'm', b'.', b'x', 0x92, 1, 0xd4, 0xff, 0x00,
    ];
    let e = Serializer::MsgPack.decode(&call).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(
            "invalid MessagePack: CALL element 5 (Arguments): a MessagePack extension value"
        ),
        "{text}"
    );
    assert!(text.contains("send null instead"), "{text}");
    let e = Serializer::Cbor
        .decode(&[0x82, 0x18, 48, 0xff])
        .unwrap_err();
    assert!(!e.to_string().contains("Semantic("), "{e}");
}

#[test]
fn values_round_trip_outside_messages() {
    let v = Value::Dict(crate::dict! {
        "args" => Value::List(vec![Value::Int(1), Value::Bytes(vec![0, 255])]),
        "kwargs" => crate::dict! {"k" => "v"},
    });
    for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let mut out = Vec::new();
        ser.encode_value(&v, &mut out).expect("encode");
        assert_eq!(ser.decode_value(&out).expect("decode"), v, "{}", ser.name());
    }
    assert!(
        Serializer::MsgPack.decode_value(&[0xc1]).is_err(),
        "a reserved byte"
    );
}
