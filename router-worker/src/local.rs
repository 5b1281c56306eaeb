//! Router components: sessions inside the router process, linked to their
//! realm in memory (no socket, no serialization). A component gets a
//! [`client::Client`] like any other, so the same component code
//! runs inside a router or in a container.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use client::{CallError, Client, Link};
use proto::message::{Call, Goodbye, Publish};
use proto::{Dict, Id, Message, Payload, Serializer, Value};
use tokio::sync::oneshot;

use crate::outbound::{Next, OutMsg, OutboxReceiver, outbox};
use crate::realm::{
    ClientFeatures, RealmCommand, RealmHandle, SessionInfo, SessionLink, TransportInfo,
};

/// Queue of messages from the realm to an in-process session.
const LOCAL_QUEUE: usize = 4096;

/// The in-memory link of one router component.
struct LocalLink {
    realm: RealmHandle,
    session: Id,
    rx: OutboxReceiver,
    /// Set once the session has left; `recv` then reports the end.
    ended: Option<String>,
}

impl Link for LocalLink {
    async fn send(&mut self, msg: Message) -> Result<(), String> {
        if let Message::Goodbye(_) = msg {
            let _ = self
                .realm
                .send(RealmCommand::Leave {
                    session: self.session,
                })
                .await;
            self.ended = Some(proto::errors::uri::GOODBYE_AND_OUT.to_owned());
            return Ok(());
        }
        self.realm
            .send(RealmCommand::Message {
                session: self.session,
                msg: Box::new(msg),
            })
            .await
            .map_err(|_| "the realm stopped".to_owned())
    }

    async fn recv(&mut self) -> Option<Result<Message, String>> {
        if let Some(reason) = self.ended.take() {
            return Some(Ok(goodbye(&reason)));
        }
        match std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await {
            Next::Msg(m) => {
                let mut msg =
                    Arc::try_unwrap(m).map_or_else(|shared| shared.msg.clone(), |m| m.msg);
                crate::outbound::decode_args(&mut msg);
                Some(Ok(msg))
            }
            Next::Killed => {
                let reason = self
                    .rx
                    .kill_reason()
                    .map_or("wamp.close.killed".to_owned(), |(r, _)| r);
                let _ = self
                    .realm
                    .send(RealmCommand::Leave {
                        session: self.session,
                    })
                    .await;
                Some(Ok(goodbye(&reason)))
            }
            Next::Closed => None,
        }
    }

    async fn close(&mut self) {
        let _ = self
            .realm
            .send(RealmCommand::Leave {
                session: self.session,
            })
            .await;
    }
}

fn goodbye(reason: &str) -> Message {
    Message::Goodbye(Goodbye {
        details: Dict::new(),
        reason: reason.to_owned(),
    })
}

/// Join `realm` in process as `authid` with `authrole` (router components
/// are configured by the operator, so they are not authenticated).
///
/// # Errors
/// The realm is shutting down or the role does not exist there.
pub async fn attach(realm: &RealmHandle, authid: &str, authrole: &str) -> Result<Client, String> {
    let mut rx = None;
    let id = join(realm, authid, authrole, || {
        let (tx, r) = outbox(LOCAL_QUEUE);
        rx = Some(r);
        SessionLink::Queue(tx)
    })
    .await?;
    let rx = rx.ok_or("no outbox")?;
    let welcome = proto::dict! {
        "realm" => &*realm.name,
        "authid" => authid,
        "authrole" => authrole,
        "authmethod" => "trusted",
        "authprovider" => "static",
    };
    let link = LocalLink {
        realm: realm.clone(),
        session: id,
        rx,
        ended: None,
    };
    Ok(Client::from_link(link, id, welcome))
}

/// Join `realm` as a trusted in-process session, with a link made fresh
/// for each try (a refused join drops it); its session id.
async fn join(
    realm: &RealmHandle,
    authid: &str,
    authrole: &str,
    mut link: impl FnMut() -> SessionLink,
) -> Result<Id, String> {
    if !realm.authz().has_role(authrole) {
        return Err(format!(
            "role {authrole:?} does not exist in realm {:?}",
            &*realm.name
        ));
    }
    let info = SessionInfo {
        authid: authid.into(),
        authrole: authrole.into(),
        authmethod: "trusted".into(),
        authprovider: "static".into(),
        serializer: Serializer::Json,
        features: ClientFeatures::default(),
        transport: TransportInfo::new("local", "in-memory", "router-component".into()),
        authextra: Dict::new(),
        max_calls: 10_000,
    };
    for _ in 0..8 {
        let id: Id = rand::random_range(1..=proto::MAX_ID);
        let (reply, joined) = oneshot::channel();
        realm
            .send(RealmCommand::Join {
                id,
                info: Box::new(info.clone()),
                link: link(),
                reply,
            })
            .await
            .map_err(|_| "the realm is shutting down".to_owned())?;
        if joined.await == Ok(true) {
            return Ok(id);
        }
    }
    Err("could not find a free session id".into())
}

/// Where the realm puts the answers of a [`LocalSession`]: straight into
/// the request that waits for each (no queue, no task in between).
#[derive(Debug, Default)]
pub struct Direct {
    state: std::sync::Mutex<DirectState>,
}

#[derive(Debug, Default)]
struct DirectState {
    /// Requests waiting for their answer, by request id.
    waiting: crate::fast::HashMap<Id, oneshot::Sender<Message>>,
    /// Why the session ended; its requests fail with this from then on.
    ended: Option<String>,
}

impl Direct {
    fn state(&self) -> std::sync::MutexGuard<'_, DirectState> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A message for the session: the answer one of its requests waits
    /// for (anything else is not asked for by such a session, and ignored).
    pub fn deliver(&self, msg: Arc<OutMsg>) {
        let request = match &msg.msg {
            Message::Result(r) => r.request,
            Message::Error(e) => e.request,
            Message::Published(p) => p.request,
            _ => return,
        };
        let Some(tx) = self.state().waiting.remove(&request) else {
            return;
        };
        let msg = Arc::try_unwrap(msg).map_or_else(|shared| shared.msg.clone(), |m| m.msg);
        let _ = tx.send(msg);
    }

    /// The session is over (killed, or gone from the realm): what waits
    /// fails, and so does whatever is asked later.
    pub fn end(&self, reason: &str) {
        let mut s = self.state();
        s.ended.get_or_insert_with(|| reason.to_owned());
        s.waiting.clear();
    }
}

/// The realm's end of a [`Direct`]: when the realm lets go of it (the
/// session left, or the realm stopped), the session is over.
#[derive(Debug)]
pub struct DirectLink(Arc<Direct>);

impl DirectLink {
    /// A message for the session.
    pub fn deliver(&self, msg: Arc<OutMsg>) {
        self.0.deliver(msg);
    }

    /// The session is killed.
    pub fn end(&self, reason: &str) {
        self.0.end(reason);
    }
}

impl Drop for DirectLink {
    fn drop(&mut self) {
        self.0.end("the session left the realm");
    }
}

/// A request waiting for its answer; taken out of [`Direct`] if the
/// waiter goes away first (an HTTP client that hung up).
struct Waiting<'a>(&'a Direct, Id);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting.remove(&self.1);
    }
}

/// A session inside the router that makes requests and waits for each
/// answer (the HTTP bridge): it sends to the realm directly, and the realm
/// hands each answer to the request waiting for it, so a call costs the
/// same hops as a WebSocket caller's and no task runs for the session.
#[derive(Debug)]
pub struct LocalSession {
    realm: RealmHandle,
    session: Id,
    direct: Arc<Direct>,
    next_request: AtomicU64,
}

impl LocalSession {
    /// Join `realm` as `authid` with `authrole`, trusted (see [`attach`]).
    ///
    /// # Errors
    /// The realm is shutting down or the role does not exist there.
    pub async fn attach(
        realm: &RealmHandle,
        authid: &str,
        authrole: &str,
    ) -> Result<LocalSession, String> {
        let mut direct = Arc::new(Direct::default());
        let session = join(realm, authid, authrole, || {
            direct = Arc::new(Direct::default());
            SessionLink::Direct(DirectLink(direct.clone()))
        })
        .await?;
        Ok(LocalSession {
            realm: realm.clone(),
            session,
            direct,
            next_request: AtomicU64::new(1),
        })
    }

    /// This session's id.
    pub fn id(&self) -> Id {
        self.session
    }

    /// The session has ended (killed by the meta API, or its realm
    /// stopped): a new one must be attached.
    pub fn ended(&self) -> bool {
        self.direct.state().ended.is_some()
    }

    /// Call a procedure with CALL.Options.
    ///
    /// # Errors
    /// The callee's or router's error, or [`client::LOST`].
    pub async fn call_with(
        &self,
        procedure: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<Payload, CallError> {
        let answer = self
            .request(|request| {
                Message::Call(Call {
                    request,
                    options,
                    procedure: procedure.to_owned(),
                    payload,
                })
            })
            .await?;
        match answer {
            Message::Result(r) => Ok(r.payload),
            other => Err(unexpected(&other)),
        }
    }

    /// Publish with PUBLISH.Options, acknowledged: the publication's id.
    ///
    /// # Errors
    /// The router's error, or [`client::LOST`].
    pub async fn publish_with(
        &self,
        topic: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<Id, CallError> {
        options.insert("acknowledge".into(), Value::Bool(true));
        let answer = self
            .request(|request| {
                Message::Publish(Publish {
                    request,
                    options,
                    topic: topic.to_owned(),
                    payload,
                })
            })
            .await?;
        match answer {
            Message::Published(p) => Ok(p.publication),
            other => Err(unexpected(&other)),
        }
    }

    /// Send a request and wait for its answer (an ERROR is the `Err`).
    async fn request(&self, msg: impl FnOnce(Id) -> Message) -> Result<Message, CallError> {
        let lost = CallError::lost;
        // Request ids stay within WAMP's 1..=2^53.
        let request = self.next_request.fetch_add(1, Ordering::Relaxed) % proto::MAX_ID + 1;
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.direct.state();
            if let Some(reason) = &s.ended {
                return Err(lost(reason));
            }
            s.waiting.insert(request, tx);
        }
        let waiting = Waiting(&self.direct, request);
        let sent = self
            .realm
            .send(RealmCommand::Message {
                session: self.session,
                msg: Box::new(msg(request)),
            })
            .await;
        if sent.is_err() {
            self.direct.end("the realm stopped");
            return Err(lost("the realm stopped"));
        }
        let mut answer = rx.await;
        drop(waiting);
        // The bridge reads the answer's arguments: decoded here.
        if let Ok(m) = &mut answer
            && let Some(p) = m.payload_mut()
            && let Err(e) = p.decode_raw()
        {
            return Err(CallError::new(
                "wamp.error.invalid_argument",
                format!("the answer's arguments cannot be read: {e}"),
            ));
        }
        match answer {
            Ok(Message::Error(e)) => Err(CallError {
                uri: e.error,
                payload: e.payload,
            }),
            Ok(m) => Ok(m),
            Err(_) => {
                let reason = self.direct.state().ended.clone();
                Err(lost(reason.as_deref().unwrap_or("the session ended")))
            }
        }
    }
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        // Leave without waiting (the realm may be full or gone; a realm
        // that stops forgets the session anyway).
        let _ = self.realm.try_command(RealmCommand::Leave {
            session: self.session,
        });
    }
}

fn unexpected(m: &Message) -> CallError {
    CallError::new(
        "wamp.error.protocol_violation",
        format!("unexpected answer {}", m.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::message::{CallResult, Event};

    fn result(request: Id, n: u64) -> Arc<OutMsg> {
        OutMsg::new(Message::Result(CallResult {
            request,
            details: Dict::new(),
            payload: Payload::args(vec![Value::from(n)]),
        }))
    }

    fn wait(d: &Direct, request: Id) -> oneshot::Receiver<Message> {
        let (tx, rx) = oneshot::channel();
        d.state().waiting.insert(request, tx);
        rx
    }

    #[test]
    fn answers_go_to_the_request_waiting_for_them() {
        let d = Direct::default();
        let mut one = wait(&d, 1);
        let mut two = wait(&d, 2);
        d.deliver(result(2, 20));
        assert!(one.try_recv().is_err(), "not the answer of request 1");
        assert!(matches!(two.try_recv(), Ok(Message::Result(r)) if r.request == 2));
        // Shared with other recipients: the waiter gets a copy.
        let shared = result(1, 10);
        let keep = shared.clone();
        d.deliver(shared);
        assert!(
            matches!(one.try_recv(), Ok(Message::Result(r)) if r.payload.args == [Value::from(10u64)])
        );
        assert_eq!(keep.msg.name(), "RESULT");
        // Answers nobody waits for, and other messages, are dropped.
        d.deliver(result(9, 0));
        d.deliver(OutMsg::new(Message::Event(Event {
            subscription: 1,
            publication: 1,
            details: Dict::new(),
            payload: Payload::default(),
        })));
        assert!(d.state().waiting.is_empty());
    }

    #[test]
    fn a_waiter_that_goes_away_is_forgotten() {
        let d = Direct::default();
        let _rx = wait(&d, 5);
        drop(Waiting(&d, 5));
        assert!(d.state().waiting.is_empty());
    }

    #[test]
    fn the_end_fails_what_waits_and_what_comes() {
        let d = Arc::new(Direct::default());
        let mut rx = wait(&d, 1);
        let link = DirectLink(d.clone());
        link.end("wamp.close.killed");
        assert!(rx.try_recv().is_err(), "the waiting request failed");
        assert_eq!(d.state().ended.as_deref(), Some("wamp.close.killed"));
        // The realm letting go later keeps the first reason.
        drop(link);
        assert_eq!(d.state().ended.as_deref(), Some("wamp.close.killed"));
        // A link the realm drops (the realm stopped) ends its session.
        let d = Arc::new(Direct::default());
        drop(DirectLink(d.clone()));
        assert!(d.state().ended.is_some());
    }
}
