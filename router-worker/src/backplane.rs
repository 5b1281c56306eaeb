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
//! Nothing here ever makes a session wait for NATS: publications go
//! through a bounded queue ([`crate::config::ClusterConfig::backplane_queue`])
//! to one publishing task; when it is full, or NATS is not connected, they
//! are dropped and counted. Cross-node delivery is at-most-once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::ClusterConfig;
use crate::realm::RealmHandle;

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
}

/// A worker's NATS connection and its publishing queue.
pub struct Backplane {
    client: async_nats::Client,
    prefix: String,
    queue: mpsc::Sender<(String, Bytes)>,
    pub stats: Arc<BackplaneStats>,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a realm's actor holds to forward its publications.
#[derive(Debug, Clone)]
pub struct RealmLink {
    subject: String,
    queue: mpsc::Sender<(String, Bytes)>,
    stats: Arc<BackplaneStats>,
}

impl RealmLink {
    /// Queue one encoded publication for the other nodes, or drop and
    /// count it. Never waits.
    pub fn forward(&self, bytes: Bytes) {
        if !self.stats.connected.load(Ordering::Relaxed) {
            self.stats
                .dropped_disconnected
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.queue.try_send((self.subject.clone(), bytes)).is_err() {
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
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
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("trellis/{}/{worker}", cfg.node_id))
            .no_echo()
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let stats = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if stats.connected.swap(true, Ordering::Relaxed) {
                                return;
                            }
                            info!("cluster backplane: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
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
        let (queue, rx) = mpsc::channel(cfg.backplane_queue.max(1));
        tokio::spawn(publish_loop(client.clone(), rx, stats.clone()));
        Ok(Arc::new(Backplane {
            client,
            prefix: format!("trellis.{}.", cfg.name),
            queue,
            stats,
        }))
    }

    /// What realm `realm` forwards its publications with.
    pub fn realm_link(&self, realm: &str) -> RealmLink {
        RealmLink {
            subject: realm_subject(&self.prefix, realm),
            queue: self.queue.clone(),
            stats: self.stats.clone(),
        }
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

/// The one task that publishes to NATS, in queue order.
async fn publish_loop(
    client: async_nats::Client,
    mut rx: mpsc::Receiver<(String, Bytes)>,
    stats: Arc<BackplaneStats>,
) {
    // NATS's max_payload, once known (the server tells at connect).
    let mut limit = 0;
    while let Some((subject, bytes)) = rx.recv().await {
        if limit == 0 {
            limit = client.server_info().max_payload;
        }
        if limit > 0 && bytes.len() > limit {
            stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match client.publish(subject, bytes).await {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.dropped_disconnected.fetch_add(1, Ordering::Relaxed);
                debug!("cluster backplane: publish failed: {e}");
            }
        }
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
