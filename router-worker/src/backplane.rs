//! The NATS backplane of a clustered node (node.json's `cluster`): this
//! router worker's realms are shared with the other nodes' routers.
//!
//! Pub/Sub (CLUSTER.md, option B): one NATS subject per realm,
//! `trellis.<cluster>.r.<realm hex>.ev`. A realm's publications go there
//! once ([`crate::realm::Effect::Forward`]), and every router subscribed to
//! it matches them against its own subscribers with its own broker, so
//! prefix and wildcard subscriptions, `exclude`/`eligible` and publisher
//! disclosure behave exactly as on one node. One connection per router
//! worker publishes, and one subscription per realm receives: NATS keeps
//! one publisher's messages in order, so WAMP's per-publisher order holds
//! across topics and nodes.
//!
//! RPC: every router puts its registrations into a JetStream KV bucket
//! (`trellis_<cluster>_reg`, one key per registration, plus a key created
//! only if absent per `single` procedure) and watches everyone's into its
//! realms' dealers. A call to a callee of another member goes whole to
//! that member's inbox for the realm
//! (`trellis.<cluster>.m.<member>.rpc.<realm hex>`), and its answers come
//! back the same way: binary records (a fixed header, then the WAMP
//! message in MessagePack), gathered into one frame per member while the
//! realm handles a batch of input ([`RpcOut`]), so that a busy realm sends
//! one NATS message per member per batch rather than one per message. Heartbeats
//! (`trellis.<cluster>.hb`, every second) tell who is alive: a member
//! silent for 5 s is dead, and its calls fail and its entries go. Meta
//! queries (`wamp.session.count`, ...) are asked of every member on
//! `trellis.<cluster>.r.<realm hex>.meta` and merged.
//!
//! Nothing here ever makes a session wait for NATS: a realm hands its
//! publications and RPC messages straight to the NATS client's bounded
//! queue ([`trellis_config::router::ClusterConfig::backplane_queue`] entries,
//! written out by the client's connection task in order); when it is full,
//! or NATS is not connected, they are dropped and counted. Cross-node
//! delivery is at-most-once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::liveness::{DEAD_AFTER, HEARTBEAT};
use crate::realm::RealmHandle;
use trellis_config::router::ClusterConfig;

/// The backplane's figures, for `trellis status` and `/metrics`.
#[derive(Debug, Default)]
pub struct BackplaneStats {
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    /// Publications sent to NATS.
    pub sent: AtomicU64,
    /// Publications received from other nodes.
    pub received: AtomicU64,
    /// Dropped: the queue to NATS was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped: NATS was not connected.
    pub dropped_disconnected: AtomicU64,
    /// Dropped: a realm could not take a received publication in time, or
    /// NATS reported this node as a slow consumer.
    pub dropped_slow_consumer: AtomicU64,
    /// Dropped: larger than NATS takes (`max_payload`).
    pub dropped_too_large: AtomicU64,
    /// Other members heard from lately.
    pub members: AtomicU64,
    /// The last round trip to the NATS server, in microseconds (0:
    /// unknown).
    pub rtt_us: AtomicU64,
    /// The registration directory has been read through once: this
    /// router knows the cluster's callees (readiness).
    pub directory_synced: AtomicBool,
    /// Meta queries answered without some member known to be there
    /// (it did not answer within the time budget).
    pub meta_partial: AtomicU64,
    /// Member links (`cluster.links`) up now, from this router.
    pub links_open: AtomicU64,
    /// RPC frames sent on member links (not through NATS).
    pub link_sent: AtomicU64,
    /// RPC frames received on member links.
    pub link_received: AtomicU64,
    /// Dropped: a member link's queue was full.
    pub link_dropped: AtomicU64,
    /// Connections to the member link port refused (no hello, a wrong
    /// token).
    pub links_refused: AtomicU64,
}

/// A worker's NATS connection.
pub struct Backplane {
    client: async_nats::Client,
    prefix: String,
    /// This router's member id: `node-worker-epoch`.
    member: Arc<str>,
    /// Directory changes for the registry task.
    registry: mpsc::Sender<DirectoryChange>,
    registry_rx: std::sync::Mutex<Option<mpsc::Receiver<DirectoryChange>>>,
    /// This router's delete markers to purge, and after how long.
    purges: mpsc::Sender<Purge>,
    purges_rx: std::sync::Mutex<Option<mpsc::Receiver<Purge>>>,
    purge_after: std::time::Duration,
    /// The realms, by name, for what other members send.
    realms: std::sync::Mutex<std::collections::HashMap<String, RealmHandle>>,
    bucket: String,
    pub stats: Arc<BackplaneStats>,
    /// The directory, once reachable.
    store: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>>,
    /// Connected to NATS (for the realms, which fail cross-node calls at
    /// once while it is not).
    link: tokio::sync::watch::Sender<bool>,
    /// Other members by when they were last heard of (heartbeat or
    /// directory), and their directory keys.
    members: SharedMembers,
    /// Direct links to the other members, with `cluster.links`, and the
    /// listener until it is served.
    links: Option<Arc<crate::links::Links>>,
    links_listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
}

/// What a router knows of the cluster's other members (shared with its
/// realms' links, for how many answers a meta query may wait for).
type SharedMembers = Arc<std::sync::Mutex<Members>>;

/// What a router knows of the cluster's other members.
#[derive(Default, Debug)]
struct Members {
    /// Who was heard when, and the rules that judge it.
    liveness: crate::liveness::Liveness,
    keys: std::collections::HashMap<String, std::collections::HashSet<String>>,
}

/// Delete markers waiting to be purged, at most (more stay).
const MAX_PURGES: usize = 100_000;

/// A directory key and its new value (`None`: deleted).
type DirectoryChange = (String, Option<Bytes>);

/// A delete marker of this router's to purge: when, its key, its revision.
type Purge = (std::time::Instant, String, u64);

/// An entry of the directory as read.
struct DirectoryEntry<'a> {
    key: &'a str,
    put: bool,
    value: &'a [u8],
    /// 0: not read from the directory (a forgotten entry).
    revision: u64,
}

/// Purge this router's delete markers once due (the marker and what came
/// before it on its key, not a later put), so that the directory does not
/// keep one marker for every registration there ever was.
async fn purge_markers(
    js: async_nats::jetstream::Context,
    stream: String,
    prefix: String,
    mut rx: mpsc::Receiver<Purge>,
) {
    while let Some((due, key, revision)) = rx.recv().await {
        tokio::time::sleep_until(due.into()).await;
        let purged = match js.get_stream(&stream).await {
            Ok(s) => s
                .purge()
                .filter(format!("{prefix}{key}"))
                .sequence(revision + 1)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = purged {
            debug!(
                key,
                "cluster backplane: a delete marker was not purged: {e}"
            );
        }
    }
}

/// The NATS header naming the member that answers a meta query.
const MEMBER_HEADER: &str = "Trellis-Member";

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a realm's actor holds to forward its publications, calls and
/// registrations.
#[derive(Debug, Clone)]
pub struct RealmLink {
    /// Where the realm's publications go.
    subject: async_nats::Subject,
    /// The realm's name in hex (subjects, directory keys, member links).
    realm_hex: Arc<str>,
    prefix: String,
    member: Arc<str>,
    registry: mpsc::Sender<DirectoryChange>,
    stats: Arc<BackplaneStats>,
    store: Arc<std::sync::OnceLock<async_nats::jetstream::kv::Store>>,
    client: async_nats::Client,
    members: SharedMembers,
    links: Option<Arc<crate::links::Links>>,
}

impl RealmLink {
    /// Claim a `single` procedure in the directory: its key is created only
    /// if absent (the value names this member, for purging if it dies).
    pub async fn claim(&self, key: &str) -> crate::realm::cluster::Claimed {
        use crate::realm::cluster::Claimed;
        let Some(store) = self.store.get().cloned() else {
            return Claimed::Unavailable;
        };
        if !self.stats.connected.load(Ordering::Relaxed) {
            return Claimed::Unavailable;
        }
        let full = format!("{}.{key}", self.realm_hex);
        let created = store.create(&full, Bytes::from(self.member.to_string()));
        match tokio::time::timeout(std::time::Duration::from_secs(2), created).await {
            Ok(Ok(_)) => Claimed::Won,
            Ok(Err(e)) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                Claimed::Taken
            }
            _ => Claimed::Unavailable,
        }
    }

    /// Ask every other member a meta query; their answers within 250 ms
    /// (or fewer, once as many have come as members are known).
    pub async fn gather(
        &self,
        procedure: &str,
        payload: &proto::Payload,
    ) -> Vec<Result<proto::Payload, (String, String)>> {
        let mut out = Vec::new();
        if !self.stats.connected.load(Ordering::Relaxed) {
            return out;
        }
        let Some(bytes) = crate::realm::cluster::meta_request(procedure, payload) else {
            return out;
        };
        // Who should answer: the members heard from lately (answers from
        // others are taken too, and make them known).
        let mut waiting: std::collections::HashSet<String> = self
            .members
            .lock()
            .map(|m| m.liveness.names().cloned().collect())
            .unwrap_or_default();
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return out;
        };
        let subject = format!("{}r.{}.meta", self.prefix, self.realm_hex);
        if self
            .client
            .publish_with_reply(subject, inbox, bytes)
            .await
            .is_err()
        {
            return out;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(250);
        // A node that knows of no other member yet (it just started)
        // waits the whole budget.
        let knew_someone = !waiting.is_empty();
        while !(knew_someone && waiting.is_empty()) {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => {
                    let from = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(MEMBER_HEADER))
                        .map(|v| v.as_str().to_owned());
                    if let Some(a) = crate::realm::cluster::read_meta_answer(&msg.payload) {
                        out.push(a);
                    }
                    if let Some(from) = from {
                        waiting.remove(&from);
                        if let Ok(mut m) = self.members.lock() {
                            m.liveness.known(&from, std::time::Instant::now());
                        }
                    }
                }
                _ => break,
            }
        }
        if knew_someone && !waiting.is_empty() {
            self.stats.meta_partial.fetch_add(1, Ordering::Relaxed);
            debug!(
                procedure,
                answered = out.len(),
                missing = waiting.len(),
                "cluster backplane: a meta query got a partial answer"
            );
        }
        out
    }

    /// Give up a claimed procedure.
    pub fn release(&self, key: String) {
        let full = format!("{}.{key}", self.realm_hex);
        if self.registry.try_send((full, None)).is_err() {
            warn!("cluster backplane: the directory queue is full: a claim is not released");
        }
    }

    /// This router's member id.
    pub fn member(&self) -> Arc<str> {
        self.member.clone()
    }

    /// Queue one encoded publication for the other nodes, or drop and
    /// count it. Never waits.
    pub fn forward(&self, bytes: Bytes) {
        self.push(self.subject.clone(), bytes);
    }

    /// The subject of `member`'s inbox for this realm.
    fn inbox_of(&self, member: &str) -> async_nats::Subject {
        async_nats::Subject::from(member_subject(&self.prefix, member, &self.realm_hex))
    }

    /// Put a local registration into the directory, or take it out.
    pub fn registry(&self, op: crate::realm::cluster::RegistryOp) {
        let key = format!(
            "{}.{}.{}.{}",
            self.realm_hex, self.member, op.session, op.registration
        );
        let value = op.put.then(|| {
            Bytes::from(
                serde_json::json!({
                    "procedure": op.procedure,
                    "match": op.policy.to_string(),
                    "invoke": op.invoke.name(),
                })
                .to_string(),
            )
        });
        if self.registry.try_send((key, value)).is_err() {
            warn!("cluster backplane: the directory queue is full: a registration change is lost");
        }
    }

    /// Hand a message to the NATS client's queue if it has room now, else
    /// drop and count it: the client's `publish` is polled once (outside
    /// tokio's cooperative budget, which would otherwise say "later" with
    /// room to spare) and never awaited.
    fn push(&self, subject: async_nats::Subject, bytes: Bytes) {
        use std::task::{Context, Poll, Waker};
        if !self.stats.connected.load(Ordering::Relaxed) {
            self.stats
                .dropped_disconnected
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let client = &self.client;
        let publish = tokio::task::unconstrained(client.publish(subject, bytes));
        let mut publish = std::pin::pin!(publish);
        let counter = match publish
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => &self.stats.sent,
            Poll::Ready(Err(e))
                if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded =>
            {
                &self.stats.dropped_too_large
            }
            Poll::Ready(Err(_)) => &self.stats.dropped_disconnected,
            Poll::Pending => &self.stats.dropped_queue_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A member's inbox for one realm (its URI in hex): frames of calls,
/// cancels and answers for its sessions.
pub fn member_subject(prefix: &str, member: &str, realm_hex: &str) -> String {
    format!("{prefix}m.{member}.rpc.{realm_hex}")
}

/// The largest frame a realm gathers for one member before it sends it
/// (a larger record goes alone, within NATS's `max_payload`).
const FRAME_LIMIT: usize = 64 * 1024;

/// Members whose inbox subjects a realm keeps formatted, at most (past
/// that the cache starts again: members come and go with restarts).
const SUBJECT_CACHE: usize = 1024;

/// A realm's member-to-member RPC records on their way out: gathered
/// into one frame per member while the realm handles a batch of input,
/// then sent, one NATS message per member ([`RpcOut::flush`]). The
/// members' subjects are formatted once.
#[derive(Default)]
pub struct RpcOut {
    frames: Vec<(Arc<str>, crate::realm::cluster::Frame)>,
    subjects: std::collections::HashMap<Arc<str>, async_nats::Subject>,
}

impl RpcOut {
    /// Add a record for `member` to its frame (sending the frame first if
    /// it would grow past [`FRAME_LIMIT`]).
    pub fn add(&mut self, link: &RealmLink, member: Arc<str>, record: &[u8]) {
        let i = match self.frames.iter().position(|(m, _)| *m == member) {
            Some(i) => i,
            None => {
                self.frames.push((member, Default::default()));
                self.frames.len() - 1
            }
        };
        let frame = &mut self.frames[i].1;
        if !frame.is_empty() && frame.len() + 4 + record.len() > FRAME_LIMIT {
            let bytes = frame.take();
            self.send(link, i, bytes);
        }
        self.frames[i].1.push(record);
    }

    /// Send every gathered frame.
    pub fn flush(&mut self, link: &RealmLink) {
        for i in 0..self.frames.len() {
            if self.frames[i].1.is_empty() {
                continue;
            }
            let bytes = self.frames[i].1.take();
            self.send(link, i, bytes);
        }
        // Members written to lately stay, their frames empty; the list is
        // short (a cluster's routers), and cleared when it is not.
        if self.frames.len() > 16 {
            self.frames.clear();
        }
    }

    /// Send member `i`'s frame on its member link if one is up, else
    /// through NATS.
    fn send(&mut self, link: &RealmLink, i: usize, bytes: Bytes) {
        if let Some(links) = &link.links
            && links.send(&self.frames[i].0, &link.realm_hex, &bytes)
        {
            return;
        }
        let subject = self.subject(link, i);
        link.push(subject, bytes);
    }

    fn subject(&mut self, link: &RealmLink, i: usize) -> async_nats::Subject {
        let member = &self.frames[i].0;
        if let Some(s) = self.subjects.get(member) {
            return s.clone();
        }
        if self.subjects.len() >= SUBJECT_CACHE {
            self.subjects.clear();
        }
        let s = link.inbox_of(member);
        self.subjects.insert(member.clone(), s.clone());
        s
    }
}

/// The subject of a realm's publications: the realm URI in hex, so that no
/// character of it can mean anything to NATS.
pub fn realm_subject(prefix: &str, realm: &str) -> String {
    format!("{prefix}r.{}.ev", hex::encode(realm.as_bytes()))
}

impl Backplane {
    /// Start connecting to NATS (in the background: the router serves its
    /// own clients meanwhile, and reconnects for as long as it runs).
    ///
    /// # Errors
    /// A server address or the credentials file cannot be used.
    pub async fn start(cfg: &ClusterConfig, worker: &str) -> Result<Arc<Backplane>, String> {
        let servers = cfg
            .nats
            .servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| format!("cluster.nats.servers: {s:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stats = Arc::new(BackplaneStats::default());
        let events = stats.clone();
        let (link, _) = tokio::sync::watch::channel(false);
        let link_events = link.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("trellis/{}/{worker}", cfg.node_id))
            .no_echo()
            // The bounded queue between the realms and the connection.
            .client_capacity(cfg.backplane_queue.max(1))
            .retry_on_initial_connect()
            // A server that stops answering (frozen, or cut off without a
            // reset) is noticed after about 3 s: two pings unanswered.
            .ping_interval(std::time::Duration::from_secs(1))
            .event_callback(move |event| {
                let stats = events.clone();
                let link = link_events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            link.send_replace(true);
                            if stats.connected.swap(true, Ordering::Relaxed) {
                                return;
                            }
                            info!("cluster backplane: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            link.send_replace(false);
                            stats.reconnects.fetch_add(1, Ordering::Relaxed);
                            warn!("cluster backplane: disconnected from NATS; reconnecting (cross-node messages are dropped meanwhile)");
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            stats
                                .dropped_slow_consumer
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        other => debug!("cluster backplane: {other}"),
                    }
                }
            });
        if let Some(t) = &cfg.nats.tls {
            options = options.require_tls(true);
            if t.handshake_first {
                options = options.tls_first();
            }
            match crate::tls::nats_client_config(t).map_err(|(k, e)| format!("{k}: {e}"))? {
                Some(c) => options = options.tls_client_config(c),
                None => {
                    if let (Some(cert), Some(key)) = (&t.certificate, &t.key) {
                        options = options.add_client_certificate(cert.into(), key.into());
                    }
                }
            }
        }
        if let Some(creds) = &cfg.nats.credentials {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| format!("cluster.nats.credentials: {creds:?}: {e}"))?;
        }
        let client = options
            .connect(servers)
            .await
            .map_err(|e| format!("cluster.nats: {e}"))?;
        let (registry, registry_rx) = mpsc::channel(cfg.backplane_queue.max(1));
        let (purges, purges_rx) = mpsc::channel(MAX_PURGES);
        let epoch: u32 = rand::random();
        let member: Arc<str> = format!("{}-{worker}-{epoch:08x}", cfg.node_id).into();
        let (links, links_listener) = match &cfg.links {
            Some(l) => {
                let (links, listener) =
                    crate::links::Links::bind(l, member.clone(), stats.clone()).await?;
                (Some(links), Some(listener))
            }
            None => (None, None),
        };
        Ok(Arc::new(Backplane {
            links,
            links_listener: std::sync::Mutex::new(links_listener),
            client,
            prefix: format!("trellis.{}.", cfg.name),
            member,
            registry,
            registry_rx: std::sync::Mutex::new(Some(registry_rx)),
            purges,
            purges_rx: std::sync::Mutex::new(Some(purges_rx)),
            purge_after: std::time::Duration::from_secs(cfg.purge_after),
            realms: std::sync::Mutex::default(),
            bucket: format!("trellis_{}_reg", cfg.name),
            stats,
            store: Arc::default(),
            link,
            members: SharedMembers::default(),
        }))
    }

    /// What realm `realm` forwards its publications, calls and
    /// registrations with.
    pub fn realm_link(&self, realm: &str) -> RealmLink {
        RealmLink {
            subject: realm_subject(&self.prefix, realm).into(),
            realm_hex: hex::encode(realm.as_bytes()).into(),
            links: self.links.clone(),
            prefix: self.prefix.clone(),
            member: self.member.clone(),
            registry: self.registry.clone(),
            stats: self.stats.clone(),
            store: self.store.clone(),
            client: self.client.clone(),
            members: self.members.clone(),
        }
    }

    /// Know `realm`, for what other members send to it.
    pub fn add_realm(&self, realm: RealmHandle) {
        if let Ok(mut m) = self.realms.lock() {
            m.insert(realm.name.to_string(), realm);
        }
    }

    fn realm(&self, name: &str) -> Option<RealmHandle> {
        self.realms.lock().ok()?.get(name).cloned()
    }

    /// Start the member-to-member side once the realms are known: this
    /// member's inbox, and the registration directory (JetStream KV):
    /// putting this router's registrations, watching everyone's.
    pub fn start_rpc(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.inbox().await });
        let me = self.clone();
        tokio::spawn(async move { me.directory().await });
        let me = self.clone();
        tokio::spawn(async move { me.heartbeats().await });
        let me = self.clone();
        tokio::spawn(async move { me.watch_link().await });
        let listener = self.links_listener.lock().ok().and_then(|mut l| l.take());
        if let (Some(links), Some(listener)) = (&self.links, listener) {
            let me = self.clone();
            tokio::spawn(
                links
                    .clone()
                    .accept(listener, move |realm, frame| me.to_inbox(realm, frame)),
            );
            let me = self.clone();
            tokio::spawn(async move { me.link_adverts().await });
        }
    }

    /// Where the members advertise their links.
    fn links_subject(&self) -> String {
        format!("{}links", self.prefix)
    }

    /// Hear the other members' link adverts, and link to them.
    async fn link_adverts(self: Arc<Self>) {
        let Some(links) = self.links.clone() else {
            return;
        };
        let mut sub = match self.client.subscribe(self.links_subject()).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cluster backplane: cannot subscribe to member link adverts: {e}");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            links.heard(&msg.payload);
        }
    }

    /// Tell every realm about the cluster.
    async fn to_realms(&self, cmd: impl Fn() -> crate::realm::RealmCommand) {
        let realms: Vec<RealmHandle> = self
            .realms
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for r in realms {
            let _ = r.cluster_event(cmd()).await;
        }
    }

    /// The realms follow the connection: while it is down, calls to
    /// callees of other members fail at once.
    async fn watch_link(self: Arc<Self>) {
        let mut rx = self.link.subscribe();
        let mut up = *rx.borrow();
        while rx.changed().await.is_ok() {
            let now = *rx.borrow();
            if now != up {
                up = now;
                self.to_realms(|| crate::realm::RealmCommand::Link(now))
                    .await;
            }
        }
    }

    /// Say this member is alive every second; hear the others; a member
    /// silent for [`DEAD_AFTER`] (while this one was connected all along)
    /// is dead: every realm forgets its callees and fails its calls, and
    /// its directory entries are purged.
    async fn heartbeats(self: Arc<Self>) {
        let subject = format!("{}hb", self.prefix);
        let links_subject = async_nats::Subject::from(self.links_subject());
        let mut sub = match self.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cluster backplane: cannot subscribe to heartbeats: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = sub.next() => {
                    let Some(msg) = msg else { return };
                    if let Ok(member) = std::str::from_utf8(&msg.payload)
                        && let Ok(mut m) = self.members.lock()
                    {
                        m.liveness.heard(member, std::time::Instant::now());
                    }
                }
                _ = tick.tick() => {
                    let up = *self.link.borrow();
                    let reconnects = self.stats.reconnects.load(Ordering::Relaxed);
                    // The rules (silent, dead, judging afresh after a
                    // reconnect or a frozen process) are crate::liveness's.
                    let (verdict, dead) = match self.members.lock() {
                        Ok(mut m) => {
                            let v = m.liveness.tick(std::time::Instant::now(), up, reconnects);
                            self.stats
                                .members
                                .store(m.liveness.members() as u64, Ordering::Relaxed);
                            let dead: Vec<(String, Vec<String>)> = v
                                .dead
                                .iter()
                                .map(|d| {
                                    let keys = m.keys.remove(d).unwrap_or_default();
                                    (d.clone(), keys.into_iter().collect())
                                })
                                .collect();
                            (v, dead)
                        }
                        Err(_) => continue,
                    };
                    if !verdict.heartbeat {
                        continue;
                    }
                    let _ = self
                        .client
                        .publish(subject.clone(), Bytes::from(self.member.to_string()))
                        .await;
                    if let Some(links) = &self.links {
                        let _ = self
                            .client
                            .publish(links_subject.clone(), links.advert())
                            .await;
                    }
                    // The round trip: a flush waits for the server's PONG.
                    let t0 = std::time::Instant::now();
                    if tokio::time::timeout(std::time::Duration::from_secs(2), self.client.flush())
                        .await
                        .is_ok_and(|r| r.is_ok())
                    {
                        self.stats
                            .rtt_us
                            .store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    for (member, yes) in verdict.reachable {
                        if !yes {
                            info!(member, "cluster backplane: a member is silent: calls pass over its callees");
                        }
                        let m: Arc<str> = member.as_str().into();
                        self.to_realms(|| crate::realm::RealmCommand::Reachable {
                            member: m.clone(),
                            yes,
                        })
                        .await;
                    }
                    for (member, keys) in dead {
                        warn!(member, "cluster backplane: a member is silent for {} s: taken as dead", DEAD_AFTER.as_secs());
                        if let Some(links) = &self.links {
                            links.forget(&member);
                        }
                        let m: Arc<str> = member.as_str().into();
                        self.to_realms(|| crate::realm::RealmCommand::MemberDown {
                            member: m.clone(),
                            why: "its node stopped answering",
                        })
                        .await;
                        for key in keys {
                            let _ = self.registry.try_send((key, None));
                        }
                    }
                }
            }
        }
    }

    async fn inbox(self: Arc<Self>) {
        let subject = member_subject(&self.prefix, &self.member, "*");
        let mut sub = match self.client.subscribe(subject).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cluster backplane: cannot subscribe to this router's inbox: {e}");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            // The realm is the subject's last token, in hex.
            if let Some(realm) = msg.subject.rsplit('.').next() {
                self.to_inbox(realm, msg.payload);
            }
        }
    }

    /// A frame for this member's inbox of a realm (its name in hex), from
    /// NATS or a member link.
    fn to_inbox(&self, realm_hex: &str, frame: Bytes) {
        let realm = hex::decode(realm_hex)
            .ok()
            .and_then(|r| String::from_utf8(r).ok());
        let Some(handle) = realm.as_deref().and_then(|r| self.realm(r)) else {
            debug!(
                ?realm,
                "cluster backplane: a call for an unknown realm: dropped"
            );
            return;
        };
        if let Err(crate::realm::RemoteRefused::Full) = handle.remote_rpc(frame) {
            self.stats
                .dropped_slow_consumer
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The registration directory: a KV bucket of one key per local
    /// registration (`realm.member.session.registration`, the procedure
    /// and policies as JSON). Retries until JetStream answers.
    async fn directory(self: Arc<Self>) {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut attempts = 0u32;
        let store = loop {
            let got = match js.get_key_value(self.bucket.clone()).await {
                Ok(s) => Ok(s),
                // The bucket's stream created as a KV bucket is, by hand:
                // async-nats's `create_key_value` first reads the account
                // info in a shape nats-server 2.9 (Debian's) does not send.
                Err(_) => match js
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: format!("KV_{}", self.bucket),
                        subjects: vec![format!("$KV.{}.>", self.bucket)],
                        max_messages_per_subject: 1,
                        discard: async_nats::jetstream::stream::DiscardPolicy::New,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        num_replicas: 1,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => js
                        .get_key_value(self.bucket.clone())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            match got {
                Ok(s) => break s,
                Err(e) => {
                    attempts += 1;
                    // Said once loudly (the node is not ready meanwhile),
                    // then quietly while it retries.
                    if attempts == 10 {
                        warn!(
                            "cluster backplane: the registration directory (JetStream key-value bucket {}) is still not reachable after 10 s: {e}; is JetStream enabled on the NATS server (nats-server -js)? The node is not ready until it is",
                            self.bucket
                        );
                    } else {
                        debug!(
                            "cluster backplane: the registration directory is not reachable yet: {e}"
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        };
        info!(bucket = %self.bucket, "cluster backplane: registration directory ready");
        let _ = self.store.set(store.clone());
        let Some(mut changes) = self.registry_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some((key, value)) = changes.recv().await {
                let r = match value {
                    Some(v) => writer
                        .put(&key, v)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => writer.delete(&key).await.map_err(|e| e.to_string()),
                };
                if let Err(e) = r {
                    warn!(key, "cluster backplane: a directory change failed: {e}");
                }
            }
        });
        if let Some(rx) = self.purges_rx.lock().ok().and_then(|mut r| r.take()) {
            let stream = format!("KV_{}", self.bucket);
            let prefix = format!("$KV.{}.", self.bucket);
            tokio::spawn(purge_markers(js.clone(), stream, prefix, rx));
        }
        let mut link = self.link.subscribe();
        loop {
            // Read the directory through from its start (again after a
            // lost connection: delete markers purged meanwhile are never
            // seen, so what was known and is not there any more goes).
            let mut watch = match store.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    debug!("cluster backplane: cannot watch the directory yet: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            // The keys there now (the watch brings their values, and what
            // changes from now on).
            match store.keys().await {
                Ok(keys) => {
                    let present: std::collections::HashSet<String> =
                        keys.filter_map(|k| async move { k.ok() }).collect().await;
                    self.read_through(present).await;
                }
                Err(e) => {
                    // The watch still brings every entry; only what went
                    // while this router was away is not noticed.
                    warn!("cluster backplane: cannot list the directory: {e}");
                    self.stats.directory_synced.store(true, Ordering::Relaxed);
                }
            }
            let mut was_down = false;
            loop {
                tokio::select! {
                    entry = watch.next() => {
                        let Some(Ok(entry)) = entry else { break };
                        self.directory_entry(DirectoryEntry {
                            key: &entry.key,
                            put: entry.operation == async_nats::jetstream::kv::Operation::Put,
                            value: &entry.value,
                            revision: entry.revision,
                        })
                        .await;
                    }
                    changed = link.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let up = *link.borrow_and_update();
                        if up && was_down {
                            break;
                        }
                        was_down |= !up;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The directory's keys have been listed: entries of other members
    /// known before and not there now are gone (their delete markers may
    /// have been purged while this router was not listening).
    async fn read_through(&self, seen: std::collections::HashSet<String>) {
        let stale: Vec<String> = match self.members.lock() {
            Ok(m) => m
                .keys
                .values()
                .flatten()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        for key in &stale {
            self.directory_entry(DirectoryEntry {
                key,
                put: false,
                value: &[],
                revision: 0,
            })
            .await;
        }
        if !stale.is_empty() {
            info!(
                entries = stale.len(),
                "cluster backplane: directory entries gone while this router was not listening: forgotten"
            );
        }
        if !self.stats.directory_synced.swap(true, Ordering::Relaxed) {
            info!("cluster backplane: registration directory read through");
        }
    }

    /// One entry of the directory: put (with its value) or deleted, at
    /// `revision`.
    async fn directory_entry(&self, entry: DirectoryEntry<'_>) {
        let mut parts = entry.key.splitn(4, '.');
        let (Some(realm_hex), Some(member), Some(session), Some(reg)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let put = entry.put;
        if member == "p" {
            // A claimed single procedure: remember whose, to purge it with
            // its owner if that one dies.
            if let Ok(mut m) = self.members.lock() {
                if put {
                    let owner = String::from_utf8_lossy(entry.value).into_owned();
                    if owner != *self.member {
                        m.keys
                            .entry(owner)
                            .or_default()
                            .insert(entry.key.to_owned());
                    }
                } else {
                    for keys in m.keys.values_mut() {
                        keys.remove(entry.key);
                    }
                }
            }
            return;
        }
        // The realm, session and registration the key names.
        let target = match (
            hex::decode(realm_hex)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|r| self.realm(&r)),
            session.parse::<proto::Id>(),
            reg.parse::<proto::Id>(),
        ) {
            (Some(handle), Ok(session), Ok(registration)) => Some((handle, session, registration)),
            _ => None,
        };
        if member == &*self.member {
            let Some((handle, session, registration)) = target else {
                return;
            };
            if put {
                // This router's entry has its place in the cluster's order
                // of registration.
                let _ = handle
                    .remote_registry(crate::realm::cluster::RegistryEntry {
                        put,
                        member: self.member.clone(),
                        session,
                        registration,
                        procedure: String::new(),
                        policy: proto::uri::MatchPolicy::Exact,
                        invoke: proto::options::InvokePolicy::Single,
                        revision: entry.revision,
                    })
                    .await;
            } else {
                // Its delete marker goes in time (each session would leave
                // one for ever otherwise).
                if entry.revision > 0 {
                    let _ = self.purges.try_send((
                        std::time::Instant::now() + self.purge_after,
                        entry.key.to_owned(),
                        entry.revision,
                    ));
                }
                // Deleted by someone else (who took this router for dead):
                // put it back if the registration lives.
                let _ = handle
                    .cluster_event(crate::realm::RealmCommand::RegistryLost {
                        session,
                        registration,
                    })
                    .await;
            }
            return;
        }
        if let Ok(mut m) = self.members.lock() {
            m.liveness.known(member, std::time::Instant::now());
            let keys = m.keys.entry(member.to_owned()).or_default();
            if put {
                keys.insert(entry.key.to_owned());
            } else {
                keys.remove(entry.key);
            }
        }
        let Some((handle, session, registration)) = target else {
            return;
        };
        let (procedure, policy, invoke) = if put {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(entry.value) else {
                return;
            };
            let options = proto::dict! {
                "match" => v["match"].as_str().unwrap_or("exact"),
                "invoke" => v["invoke"].as_str().unwrap_or("single"),
            };
            let Ok(o) = proto::options::RegisterOptions::parse(&options) else {
                return;
            };
            (
                v["procedure"].as_str().unwrap_or_default().to_owned(),
                o.policy,
                o.invoke,
            )
        } else {
            (
                String::new(),
                proto::uri::MatchPolicy::Exact,
                proto::options::InvokePolicy::Single,
            )
        };
        let _ = handle
            .remote_registry(crate::realm::cluster::RegistryEntry {
                put,
                member: member.into(),
                session,
                registration,
                procedure,
                policy,
                invoke,
                revision: entry.revision,
            })
            .await;
    }

    /// Receive the other nodes' publications in `realm` (until the realm
    /// stops).
    pub async fn subscribe_realm(self: &Arc<Self>, realm: RealmHandle) {
        let subject = realm_subject(&self.prefix, &realm.name);
        let mut sub = match self.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(realm = %realm.name, "cluster backplane: cannot subscribe to the realm's publications: {e}");
                return;
            }
        };
        // This realm's part of the other members' meta queries.
        let meta_subject = format!(
            "{}r.{}.meta",
            self.prefix,
            hex::encode(realm.name.as_bytes())
        );
        if let Ok(mut queries) = self.client.subscribe(meta_subject).await {
            let (client, r, member) = (self.client.clone(), realm.clone(), self.member.clone());
            tokio::spawn(async move {
                while let Some(msg) = queries.next().await {
                    let (Some(reply), Some((procedure, payload))) = (
                        msg.reply,
                        crate::realm::cluster::read_meta_request(&msg.payload),
                    ) else {
                        continue;
                    };
                    let answer = r.meta_local(procedure, payload).await;
                    if let Some(bytes) = crate::realm::cluster::meta_answer(&answer) {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(MEMBER_HEADER, &*member);
                        let _ = client.publish_with_headers(reply, headers, bytes).await;
                    }
                }
            });
        }
        let stats = self.stats.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                stats.received.fetch_add(1, Ordering::Relaxed);
                match realm.remote(msg.payload) {
                    Ok(()) => {}
                    Err(crate::realm::RemoteRefused::Full) => {
                        stats.dropped_slow_consumer.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(crate::realm::RemoteRefused::Stopped) => break,
                }
            }
            debug!(subject, "cluster backplane: realm subscription ended");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_subjects_are_safe_tokens() {
        let s = realm_subject("trellis.c1.", "com.my app.*>$");
        assert!(s.starts_with("trellis.c1.r."));
        assert!(s.ends_with(".ev"));
        let token = &s["trellis.c1.r.".len()..s.len() - 3];
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_ne!(
            realm_subject("trellis.c1.", "realm1"),
            realm_subject("trellis.c1.", "realm2")
        );
    }
}
