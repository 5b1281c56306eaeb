//! The benchmark's ceiling: a bare WAMP router on Trellis's own WebSocket
//! stack (hyper's handshake, the subprotocol negotiation, `wscodec` and
//! the vectored writer), with nothing else: no authentication, no
//! authorization, no option parsing, no meta API, no realm actor, no
//! queues with limits. It forwards CALL → INVOCATION → YIELD → RESULT and
//! PUBLISH → EVENT, and answers HELLO, REGISTER, SUBSCRIBE and GOODBYE.
//! `trellis-bench ceiling` runs it; `scripts/bench` reports the router's
//! figures as a share of it, measured in the same run, so that they hold
//! on any machine. Not a router anyone should use: one global lock, and a
//! message for a session whose queue is full is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proto::message::{CallResult, Event, Goodbye, Invocation, Registered, Subscribed, Welcome};
use proto::{Dict, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;

use super::http::{self, UpgradeKind};
use super::websocket::WsTransport;
use super::{ListenerSettings, Peer};
use crate::outbound::OutMsg;
use crate::realms::Realms;
use crate::session::transport::Transport;

type Tx = mpsc::Sender<Arc<OutMsg>>;

/// Messages waiting for one session (a benchmark's load stays far below).
const QUEUE: usize = 8192;

#[derive(Default)]
struct State {
    next: u64,
    /// procedure → (registration, callee)
    procedures: HashMap<String, (u64, Tx)>,
    /// invocation → (caller, its request)
    calls: HashMap<u64, (Tx, u64)>,
    /// topic → (subscription, subscribers)
    topics: HashMap<String, (u64, Vec<Tx>)>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// Serve the bare router on `listener` until the process ends.
///
/// # Errors
/// When accepting fails.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let cfg: trellis_config::router::TransportConfig = serde_json::from_value(serde_json::json!({
        "type": "websocket",
        "endpoint": {"type": "tcp", "port": 0},
        "serializers": ["json", "msgpack", "cbor"],
        "options": {"max_message_size": 16 << 20}
    }))
    .map_err(std::io::Error::other)?;
    let settings = Arc::new(ListenerSettings::from_config(
        0,
        &cfg,
        None,
        Default::default(),
    ));
    let state = Arc::new(Mutex::new(State::default()));
    loop {
        let (s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(connection(s, settings.clone(), state.clone()));
    }
}

async fn connection(s: TcpStream, settings: Arc<ListenerSettings>, state: Arc<Mutex<State>>) {
    // The router's own HTTP phase and handshake; then the bare loop.
    let peer = match s.peer_addr() {
        Ok(addr) => Peer::tcp(addr),
        Err(_) => return,
    };
    let shutdown = CancellationToken::new();
    let phase = http::http_phase(s, peer, settings, Realms::default(), shutdown);
    let Some((io, early, UpgradeKind::Wamp(accepted, ws), ..)) = phase.await else {
        return;
    };
    let mut t = WsTransport::new(io, early, *accepted, &ws);
    let ser = t.serializer();
    let (tx, mut rx) = mpsc::channel::<Arc<OutMsg>>(QUEUE);
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(mut m) = out else { return };
                // Everything queued goes out in one write.
                loop {
                    if t.feed(&m).await.is_err() {
                        return;
                    }
                    match rx.try_recv() {
                        Ok(next) => m = next,
                        Err(_) => break,
                    }
                }
                if t.flush().await.is_err() {
                    return;
                }
            }
            incoming = t.recv() => {
                let Ok(bytes) = incoming else { return };
                let Ok(msg) = ser.decode(&bytes) else { return };
                if !handle(msg, &tx, &state) {
                    return;
                }
            }
        }
    }
}

/// One message from a session; `false` when it leaves.
fn handle(msg: Message, tx: &Tx, state: &Mutex<State>) -> bool {
    let Ok(mut s) = state.lock() else {
        return false;
    };
    let send = |to: &Tx, m: Message| {
        let _ = to.try_send(OutMsg::new(m));
    };
    match msg {
        Message::Hello(_) => {
            let session = s.id();
            let details = proto::dict! {
                "roles" => proto::dict! {
                    "broker" => Dict::new(),
                    "dealer" => Dict::new()
                }
            };
            send(tx, Message::Welcome(Welcome { session, details }));
        }
        Message::Register(r) => {
            let registration = s.id();
            s.procedures.insert(r.procedure, (registration, tx.clone()));
            send(
                tx,
                Message::Registered(Registered {
                    request: r.request,
                    registration,
                }),
            );
        }
        Message::Call(c) => {
            let Some((registration, callee)) = s.procedures.get(&c.procedure).cloned() else {
                return true;
            };
            let request = s.id();
            s.calls.insert(request, (tx.clone(), c.request));
            send(
                &callee,
                Message::Invocation(Invocation {
                    request,
                    registration,
                    details: Dict::new(),
                    payload: c.payload,
                }),
            );
        }
        Message::Yield(y) => {
            if let Some((caller, request)) = s.calls.remove(&y.request) {
                send(
                    &caller,
                    Message::Result(CallResult {
                        request,
                        details: Dict::new(),
                        payload: y.payload,
                    }),
                );
            }
        }
        Message::Subscribe(sub) => {
            let id = s.id();
            let entry = s.topics.entry(sub.topic).or_insert((id, Vec::new()));
            entry.1.push(tx.clone());
            let subscription = entry.0;
            send(
                tx,
                Message::Subscribed(Subscribed {
                    request: sub.request,
                    subscription,
                }),
            );
        }
        Message::Publish(p) => {
            let publication = s.id();
            if let Some((subscription, subscribers)) = s.topics.get(&p.topic) {
                // One message, encoded once, for every subscriber.
                let event = OutMsg::new(Message::Event(Event {
                    subscription: *subscription,
                    publication,
                    details: Dict::new(),
                    payload: p.payload,
                }));
                for sub in subscribers {
                    let _ = sub.try_send(event.clone());
                }
            }
        }
        Message::Goodbye(_) => {
            send(
                tx,
                Message::Goodbye(Goodbye {
                    details: Dict::new(),
                    reason: "wamp.close.goodbye_and_out".into(),
                }),
            );
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use proto::message::{Call, Hello, Publish, Register, Subscribe, Yield};
    use proto::{Dict, Message, Payload, Serializer, Value};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn join(port: u16) -> Client {
        let mut req = format!("ws://127.0.0.1:{port}/ws")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "wamp.2.msgpack".parse().unwrap());
        let (mut c, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        send(
            &mut c,
            Message::Hello(Hello {
                realm: "realm1".into(),
                details: Dict::new(),
            }),
        )
        .await;
        assert!(matches!(next(&mut c).await, Message::Welcome(_)));
        c
    }

    async fn send(c: &mut Client, m: Message) {
        let b = Serializer::MsgPack.encode_to_vec(&m).unwrap();
        c.send(Ws::Binary(b.into())).await.unwrap();
    }

    async fn next(c: &mut Client) -> Message {
        loop {
            match c.next().await.unwrap().unwrap() {
                Ws::Binary(b) => return Serializer::MsgPack.decode(&b).unwrap(),
                Ws::Ping(_) | Ws::Pong(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    /// A call goes callee and back; an event reaches its subscriber.
    #[tokio::test]
    async fn calls_and_events_pass_through() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(super::serve(l));
        let (mut callee, mut caller) = (join(port).await, join(port).await);
        send(
            &mut callee,
            Message::Register(Register {
                request: 1,
                options: Dict::new(),
                procedure: "p".into(),
            }),
        )
        .await;
        assert!(matches!(next(&mut callee).await, Message::Registered(_)));
        let args = Payload::args(vec![Value::Int(7)]);
        send(
            &mut caller,
            Message::Call(Call {
                request: 9,
                options: Dict::new(),
                procedure: "p".into(),
                payload: args.clone(),
            }),
        )
        .await;
        let Message::Invocation(inv) = next(&mut callee).await else {
            panic!()
        };
        assert_eq!(inv.payload, args);
        send(
            &mut callee,
            Message::Yield(Yield {
                request: inv.request,
                options: Dict::new(),
                payload: args.clone(),
            }),
        )
        .await;
        let Message::Result(r) = next(&mut caller).await else {
            panic!()
        };
        assert_eq!((r.request, r.payload), (9, args.clone()));
        send(
            &mut callee,
            Message::Subscribe(Subscribe {
                request: 2,
                options: Dict::new(),
                topic: "t".into(),
            }),
        )
        .await;
        assert!(matches!(next(&mut callee).await, Message::Subscribed(_)));
        send(
            &mut caller,
            Message::Publish(Publish {
                request: 3,
                options: Dict::new(),
                topic: "t".into(),
                payload: args.clone(),
            }),
        )
        .await;
        let Message::Event(e) = next(&mut callee).await else {
            panic!()
        };
        assert_eq!(e.payload, args);
    }
}
