//! Router components: sessions inside the router process, linked to their
//! realm in memory (no socket, no serialization). A component gets a
//! [`client::Client`] like any other, so the same component code
//! runs inside a router or in a container.

use client::{Client, Link};
use proto::message::Goodbye;
use proto::{Dict, Id, Message, Serializer};
use tokio::sync::oneshot;

use crate::outbound::{Next, OutboxReceiver, outbox};
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
                msg,
            })
            .await
            .map_err(|_| "the realm stopped".to_owned())
    }

    async fn recv(&mut self) -> Option<Result<Message, String>> {
        if let Some(reason) = self.ended.take() {
            return Some(Ok(goodbye(&reason)));
        }
        match std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await {
            Next::Msg(m) => Some(Ok(m.msg.clone())),
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
    if !realm.authz().has_role(authrole) {
        return Err(format!(
            "role {authrole:?} does not exist in realm {:?}",
            &*realm.name
        ));
    }
    let info = SessionInfo {
        authid: authid.to_owned(),
        authrole: authrole.to_owned(),
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
        // A fresh outbox each try: a refused join drops its sender.
        let (tx, rx) = outbox(LOCAL_QUEUE);
        let (reply, joined) = oneshot::channel();
        realm
            .send(RealmCommand::Join {
                id,
                info: Box::new(info.clone()),
                link: SessionLink { out: tx },
                reply,
            })
            .await
            .map_err(|_| "the realm is shutting down".to_owned())?;
        if joined.await == Ok(true) {
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
            return Ok(Client::from_link(link, id, welcome));
        }
    }
    Err("could not find a free session id".into())
}
