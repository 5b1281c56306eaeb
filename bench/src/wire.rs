//! WAMP over WebSocket as the load generator speaks it: encoding, a
//! connection, and a reader of EVENT frames that decodes only their heads.

use super::*;

fn encode(ser: Serializer, msg: &Message) -> Result<Ws> {
    let bytes = ser.encode_to_vec(msg).map_err(|e| anyhow!("{e}"))?;
    Ok(if ser.is_binary() {
        Ws::Binary(bytes.into())
    } else {
        Ws::Text(tungstenite::Utf8Bytes::try_from(bytes).map_err(|e| anyhow!("{e}"))?)
    })
}

fn decode(ser: Serializer, ws: Ws) -> Result<Option<Message>> {
    match ws {
        Ws::Text(t) => Ok(Some(ser.decode(t.as_bytes())?)),
        Ws::Binary(b) => Ok(Some(ser.decode(&b)?)),
        Ws::Close(c) => bail!("connection closed by the router: {c:?}"),
        _ => Ok(None),
    }
}

/// The load generator's WebSocket read buffer (see `Conn::join`).
const BENCH_READ_BUFFER: usize = 16 * 1024;

/// `seq` and `sent_ns` of a MessagePack `[36, sub, pub, {}, [seq, sent_ns,
/// ...], ...]`, read without decoding the rest; `None` for anything else
/// (which then goes through the full decoder).
pub(crate) fn msgpack_event_head(mut b: &[u8]) -> Option<(u64, u64)> {
    use rmp::decode::{read_array_len, read_int, read_map_len};
    if read_array_len(&mut b).ok()? < 5 || read_int::<u64, _>(&mut b).ok()? != 36 {
        return None;
    }
    let _subscription: u64 = read_int(&mut b).ok()?;
    let _publication: u64 = read_int(&mut b).ok()?;
    if read_map_len(&mut b).ok()? != 0 || read_array_len(&mut b).ok()? < 2 {
        return None;
    }
    Some((read_int(&mut b).ok()?, read_int(&mut b).ok()?))
}

/// A subscriber's reader of the router's frames once it has subscribed.
///
/// tungstenite zeroes its read buffer before every read and moves every
/// message through its stream machinery; at millions of events a second
/// that cost the load generator as much CPU as its kernel reads, CPU taken
/// from the router under test on the same cores. So after SUBSCRIBED a
/// subscriber reads the socket itself: a server's frames are unmasked, and
/// the router sends nothing but whole EVENT frames until the publisher's
/// last one. Anything this reader does not take (a fragmented message, a
/// masked frame, a close) ends the run with an error rather than being
/// miscounted.
pub(crate) struct EventReader {
    ws: Socket,
    ser: Serializer,
    buf: bytes::BytesMut,
}

/// Bytes read per system call by an [`EventReader`].
const EVENT_READ: usize = 64 * 1024;
/// Largest frame an [`EventReader`] accepts.
const EVENT_MAX_FRAME: usize = 16 << 20;

/// What a subscriber receives.
pub(crate) enum Incoming {
    Event {
        seq: u64,
        sent_ns: u64,
    },
    /// Anything else (a subscriber ignores it).
    Other,
}

/// The next whole frame at the start of `buf` as (opcode, payload), split
/// off; `None` until all of it has arrived.
pub(crate) fn split_frame(buf: &mut bytes::BytesMut) -> Result<Option<(u8, bytes::BytesMut)>> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b1 & 0x80 != 0 {
        bail!("the router sent a masked frame (servers must not mask)");
    }
    let (head, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(l) => (4, usize::from(u16::from_be_bytes([l[0], l[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(l) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(l);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                )
            }
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    if len > EVENT_MAX_FRAME {
        bail!(
            "the router sent a frame of {len} bytes (the load generator takes at most {EVENT_MAX_FRAME})"
        );
    }
    if !fin || opcode == 0 {
        bail!(
            "the router fragmented a message; the load generator's event reader takes whole frames only"
        );
    }
    if buf.len() < head + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(head + len);
    Ok(Some((opcode, frame.split_off(head))))
}

impl EventReader {
    /// Takes over `c`'s socket; `c` must have nothing buffered.
    pub(crate) fn new(mut c: Conn) -> Result<EventReader> {
        if let Some(m) = c.try_recv()? {
            bail!("unexpected message from the router after SUBSCRIBED: {m:?}");
        }
        Ok(EventReader {
            ws: c.ws,
            ser: c.ser,
            buf: bytes::BytesMut::new(),
        })
    }

    /// The next EVENT's sequence number and send time (its first two
    /// arguments), or any other message. For MessagePack the head is read
    /// in place, without decoding (and copying) the payload.
    pub(crate) async fn next(&mut self) -> Result<Incoming> {
        loop {
            while let Some((opcode, payload)) = split_frame(&mut self.buf)? {
                match opcode {
                    1 | 2 => return self.incoming(&payload),
                    8 => bail!("connection closed by the router"),
                    // Pings are not answered: a run is far shorter than any
                    // router's ping timeout.
                    _ => {}
                }
            }
            self.buf.reserve(EVENT_READ);
            let n = tokio::io::AsyncReadExt::read_buf(self.ws.get_mut(), &mut self.buf).await?;
            if n == 0 {
                bail!("connection closed");
            }
        }
    }

    fn incoming(&self, payload: &[u8]) -> Result<Incoming> {
        if self.ser == Serializer::MsgPack
            && let Some((seq, sent_ns)) = msgpack_event_head(payload)
        {
            return Ok(Incoming::Event { seq, sent_ns });
        }
        Ok(match self.ser.decode(payload)? {
            Message::Event(e) => {
                let arg = |i: usize| e.payload.args.get(i).and_then(Value::as_u64).unwrap_or(0);
                Incoming::Event {
                    seq: arg(0),
                    sent_ns: arg(1),
                }
            }
            _ => Incoming::Other,
        })
    }
}

/// One joined session over a raw WebSocket.
pub(crate) struct Conn {
    pub(crate) ws: Socket,
    ser: Serializer,
    next_request: u64,
}

impl Conn {
    pub(crate) async fn join(url: &str, realm: &str, ser: Serializer) -> Result<Conn> {
        let mut req = url.into_client_request()?;
        let proto = match ser {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        };
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(proto));
        // tungstenite zeroes its whole read buffer before every read (128 KiB
        // by default), which cost this generator more than the rest of its
        // work together; a 16 KiB buffer holds several events per read.
        let config =
            tungstenite::protocol::WebSocketConfig::default().read_buffer_size(BENCH_READ_BUFFER);
        // TCP_NODELAY, as WAMP clients set it (autobahn, browsers): with
        // Nagle's algorithm a small message waits for the ACK of the one
        // before, which put up to 2.5 ms into a call's round trip.
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async_with_config(req, Some(config), true),
        )
        .await
        .context("WebSocket connect timed out")??;
        let mut c = Conn {
            ws,
            ser,
            next_request: 1,
        };
        let roles = proto::dict! {
            "caller" => Dict::new(), "callee" => Dict::new(),
            "publisher" => Dict::new(), "subscriber" => Dict::new(),
        };
        c.send(&Message::Hello(Hello {
            realm: realm.to_owned(),
            details: proto::dict! { "roles" => roles },
        }))
        .await?;
        match c.recv().await? {
            Message::Welcome(_) => Ok(c),
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }

    pub(crate) fn request(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    pub(crate) async fn send(&mut self, msg: &Message) -> Result<()> {
        self.ws.send(encode(self.ser, msg)?).await?;
        Ok(())
    }

    pub(crate) async fn feed(&mut self, msg: &Message) -> Result<()> {
        self.ws.feed(encode(self.ser, msg)?).await?;
        Ok(())
    }

    /// The next WebSocket message, within 90 s.
    async fn next_frame(&mut self) -> Result<Ws> {
        Ok(
            tokio::time::timeout(Duration::from_secs(90), self.ws.next())
                .await
                .context("no message from the router within 90 s")?
                .ok_or_else(|| anyhow!("connection closed"))??,
        )
    }

    pub(crate) async fn recv(&mut self) -> Result<Message> {
        loop {
            let ws = self.next_frame().await?;
            if let Some(m) = decode(self.ser, ws)? {
                return Ok(m);
            }
        }
    }

    /// A message if one is ready without waiting.
    pub(crate) fn try_recv(&mut self) -> Result<Option<Message>> {
        loop {
            match self.ws.next().now_or_never() {
                None => return Ok(None),
                Some(None) => bail!("connection closed"),
                Some(Some(ws)) => {
                    if let Some(m) = decode(self.ser, ws?)? {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    pub(crate) async fn register(&mut self, procedure: &str) -> Result<()> {
        let request = self.request();
        self.send(&Message::Register(Register {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
        }))
        .await?;
        match self.recv().await? {
            Message::Registered(_) => Ok(()),
            other => bail!("REGISTER failed: {other:?}"),
        }
    }

    pub(crate) async fn subscribe(&mut self, topic: &str) -> Result<()> {
        let request = self.request();
        self.send(&Message::Subscribe(Subscribe {
            request,
            options: Dict::new(),
            topic: topic.to_owned(),
        }))
        .await?;
        match self.recv().await? {
            Message::Subscribed(_) => Ok(()),
            other => bail!("SUBSCRIBE failed: {other:?}"),
        }
    }

    pub(crate) async fn leave(mut self) -> Result<()> {
        self.send(&Message::Goodbye(Goodbye {
            details: Dict::new(),
            reason: "wamp.close.normal".into(),
        }))
        .await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.recv()).await;
        let _ = self.ws.close(None).await;
        Ok(())
    }
}
