//! One-time login tokens: minted for a user, valid once and briefly.
//!
//! A trusted backend (or another application writing Redis directly) mints
//! a token for an authid; the browser presents it once, as `?ws_token=` on
//! the WebSocket URL or as a WAMP ticket. [`TokenStore::consume`] deletes it
//! atomically, so two concurrent uses admit exactly one, and says whether a
//! refused token was unknown, already used or expired.
//!
//! Stores: [`TokenStore::Embedded`] (in memory, bounded) and
//! [`TokenStore::Redis`]. The Redis format, for third-party minting:
//! key `PREFIX + token`, value JSON `{"authid": "...", "role": "...",
//! "iat": <unix seconds>}` (`role` optional, `exp` optional), with a Redis
//! expiry of at least the max age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use trellis_config::router::{TokenStoreConfig, TokenStoreKind};

/// Tokens the embedded store holds at most (minted, not yet used).
const MAX_EMBEDDED: usize = 100_000;
/// Deadline for one Redis command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The user the token logs in.
    pub authid: String,
    /// The role, or the transport's configured role when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// When it was minted (Unix seconds).
    pub iat: f64,
    /// When it expires (Unix seconds), if shorter than the max age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<f64>,
}

/// The outcome of presenting a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Consumed {
    /// Valid: it is gone now.
    Valid(TokenRecord),
    /// Never minted (or forged).
    Unknown,
    /// Minted and already used.
    Used,
    /// Minted, unused, but too old.
    Expired {
        /// Seconds since it expired.
        ago: u64,
    },
}

/// The store cannot be reached.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("token store unavailable: {0}")]
pub struct Unavailable(pub String);

/// Token store operations.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A token issued.
    Mint = 0,
    /// A token presented.
    Consume = 1,
}

/// The results counted per operation.
pub const RESULTS: [&str; 5] = ["ok", "unknown", "used", "expired", "unavailable"];

/// This process's token store operations by operation and result (the
/// metrics): a router worker's stores count together.
pub static OPS: TokenOps = TokenOps {
    counts: [const { [const { AtomicU64::new(0) }; RESULTS.len()] }; 2],
};

/// Counters of [`OPS`].
#[derive(Debug)]
pub struct TokenOps {
    counts: [[AtomicU64; RESULTS.len()]; 2],
}

impl TokenOps {
    fn count(&self, op: Op, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.counts[op as usize][i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `mint/ok`, `consume/used`, ... with their counts, non-zero only.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for (op, row) in ["mint", "consume"].iter().zip(&self.counts) {
            for (result, n) in RESULTS.iter().zip(row) {
                let n = n.load(std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    out.insert(format!("{op}/{result}"), n);
                }
            }
        }
        out
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new random token: 32 bytes, URL-safe base64 (fits a query string).
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(proto::auth::random_bytes::<32>())
}

/// A short, non-reversible label for logs (never the token itself).
pub fn log_label(token: &str) -> String {
    let h = proto::auth::cra_sign(b"trellis-token-log", token);
    h.chars().take(8).collect()
}

fn judge(record: TokenRecord, max_age: Duration) -> Consumed {
    let limit = record.iat + max_age.as_secs_f64();
    let deadline = record.exp.map_or(limit, |e| e.min(limit));
    let t = now();
    if t > deadline {
        Consumed::Expired {
            ago: (t - deadline) as u64,
        }
    } else {
        Consumed::Valid(record)
    }
}

#[derive(Debug, Default)]
struct Embedded {
    live: HashMap<String, TokenRecord>,
    /// Used tokens, remembered for a while to say "already used".
    used: HashMap<String, Instant>,
}

/// The embedded store: a bounded map guarded by a std Mutex (held for a
/// map operation only, never across an await).
#[derive(Debug, Default)]
pub struct EmbeddedStore {
    inner: Mutex<Embedded>,
}

/// The Redis store: one auto-reconnecting connection, made on first use.
pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    /// The connection; `None` until Redis was first reached.
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    /// For error messages.
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Where tokens live.
#[derive(Debug)]
pub enum TokenStore {
    /// In this router's memory.
    Embedded(EmbeddedStore),
    /// In Redis, shareable with other applications.
    Redis(RedisStore),
}

impl TokenStore {
    /// Build a store from its config.
    ///
    /// # Errors
    /// A message if the Redis URL cannot be parsed.
    pub fn from_config(cfg: &TokenStoreConfig) -> Result<TokenStore, String> {
        match cfg.kind {
            TokenStoreKind::Embedded => Ok(TokenStore::Embedded(EmbeddedStore::default())),
            TokenStoreKind::Redis => {
                let url = cfg
                    .url
                    .clone()
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
                let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| format!("invalid Redis URL {url:?}: {e}"))?;
                if let Some(db) = cfg.database {
                    let settings = info.redis_settings().clone().set_db(db);
                    info = info.set_redis_settings(settings);
                }
                let client = redis::Client::open(info)
                    .map_err(|e| format!("invalid Redis URL {url:?}: {e}"))?;
                Ok(TokenStore::Redis(RedisStore {
                    client,
                    prefix: cfg
                        .prefix
                        .clone()
                        .unwrap_or_else(|| "trellis:token:".into()),
                    conn: tokio::sync::Mutex::new(None),
                    url,
                }))
            }
        }
    }

    /// `embedded` or `redis`, for WELCOME's authprovider and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenStore::Embedded(_) => "embedded",
            TokenStore::Redis(_) => "redis",
        }
    }

    /// Mint a token for `authid`, valid for `lifetime` (at most the
    /// transport's max age, enforced when it is used).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot be reached or the embedded store is
    /// full.
    pub async fn mint(
        &self,
        authid: &str,
        role: Option<&str>,
        lifetime: Duration,
        max_age: Duration,
    ) -> Result<String, Unavailable> {
        let r = self.mint_uncounted(authid, role, lifetime, max_age).await;
        OPS.count(Op::Mint, if r.is_ok() { "ok" } else { "unavailable" });
        r
    }

    async fn mint_uncounted(
        &self,
        authid: &str,
        role: Option<&str>,
        lifetime: Duration,
        max_age: Duration,
    ) -> Result<String, Unavailable> {
        let token = new_token();
        let iat = now();
        let record = TokenRecord {
            authid: authid.to_owned(),
            role: role.map(str::to_owned),
            iat,
            exp: (lifetime < max_age).then_some(iat + lifetime.as_secs_f64()),
        };
        match self {
            TokenStore::Embedded(s) => {
                let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                if inner.live.len() >= MAX_EMBEDDED {
                    let cutoff = iat - max_age.as_secs_f64();
                    inner.live.retain(|_, r| r.iat >= cutoff);
                    let keep = max_age;
                    inner.used.retain(|_, t| t.elapsed() < keep);
                }
                if inner.live.len() >= MAX_EMBEDDED {
                    return Err(Unavailable(format!(
                        "the embedded store holds {MAX_EMBEDDED} unused tokens"
                    )));
                }
                inner.live.insert(token.clone(), record);
                Ok(token)
            }
            TokenStore::Redis(r) => {
                let value =
                    serde_json::to_string(&record).map_err(|e| Unavailable(e.to_string()))?;
                let ttl = max_age.as_secs() + 60;
                let mut conn = r.connection().await?;
                let key = format!("{}{token}", r.prefix);
                let set: Result<(), redis::RedisError> = timeout(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .arg("NX")
                        .query_async(&mut conn),
                )
                .await?;
                set.map_err(|e| Unavailable(format!("Redis at {}: {e}", r.url)))?;
                Ok(token)
            }
        }
    }

    /// Present a token: it is deleted atomically if it exists.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot be reached.
    pub async fn consume(&self, token: &str, max_age: Duration) -> Result<Consumed, Unavailable> {
        let r = self.consume_uncounted(token, max_age).await;
        let result = match &r {
            Ok(Consumed::Valid(_)) => "ok",
            Ok(Consumed::Unknown) => "unknown",
            Ok(Consumed::Used) => "used",
            Ok(Consumed::Expired { .. }) => "expired",
            Err(_) => "unavailable",
        };
        OPS.count(Op::Consume, result);
        r
    }

    async fn consume_uncounted(
        &self,
        token: &str,
        max_age: Duration,
    ) -> Result<Consumed, Unavailable> {
        match self {
            TokenStore::Embedded(s) => {
                let mut inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
                match inner.live.remove(token) {
                    Some(record) => {
                        if inner.used.len() >= MAX_EMBEDDED {
                            let keep = max_age;
                            inner.used.retain(|_, t| t.elapsed() < keep);
                        }
                        if inner.used.len() < MAX_EMBEDDED {
                            inner.used.insert(token.to_owned(), Instant::now());
                        }
                        Ok(judge(record, max_age))
                    }
                    None if inner.used.contains_key(token) => Ok(Consumed::Used),
                    None => Ok(Consumed::Unknown),
                }
            }
            TokenStore::Redis(r) => {
                let mut conn = r.connection().await?;
                let key = format!("{}{token}", r.prefix);
                let used_key = format!("{}used:{token}", r.prefix);
                let got: Result<Option<String>, redis::RedisError> =
                    timeout(redis::cmd("GETDEL").arg(&key).query_async(&mut conn)).await?;
                let got = got.map_err(|e| Unavailable(format!("Redis at {}: {e}", r.url)))?;
                let Some(value) = got else {
                    let used: Result<bool, redis::RedisError> =
                        timeout(redis::cmd("EXISTS").arg(&used_key).query_async(&mut conn)).await?;
                    return match used {
                        Ok(true) => Ok(Consumed::Used),
                        Ok(false) => Ok(Consumed::Unknown),
                        Err(e) => Err(Unavailable(format!("Redis at {}: {e}", r.url))),
                    };
                };
                // Remember the use for a while, to say "already used".
                let ttl = max_age.as_secs().max(1) + 60;
                let _: Result<Result<(), redis::RedisError>, Unavailable> = timeout(
                    redis::cmd("SET")
                        .arg(&used_key)
                        .arg(1)
                        .arg("EX")
                        .arg(ttl)
                        .query_async(&mut conn),
                )
                .await;
                match serde_json::from_str::<TokenRecord>(&value) {
                    Ok(record) => Ok(judge(record, max_age)),
                    // A value in another shape was not minted for us.
                    Err(_) => Ok(Consumed::Unknown),
                }
            }
        }
    }
}

async fn timeout<T>(fut: impl Future<Output = T>) -> Result<T, Unavailable> {
    tokio::time::timeout(REDIS_TIMEOUT, fut).await.map_err(|_| {
        Unavailable(format!(
            "no answer from Redis within {} s",
            REDIS_TIMEOUT.as_secs()
        ))
    })
}

impl RedisStore {
    /// The shared connection, connecting first if needed. Once made, the
    /// connection manager reconnects by itself after Redis comes back.
    async fn connection(&self) -> Result<redis::aio::ConnectionManager, Unavailable> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let made = timeout(redis::aio::ConnectionManager::new_with_config(
            self.client.clone(),
            config,
        ))
        .await?;
        let c =
            made.map_err(|e| Unavailable(format!("cannot reach Redis at {}: {e}", self.url)))?;
        *guard = Some(c.clone());
        Ok(c)
    }
}

/// The value of `param` in a request URI's query string, decoded as a
/// form (`+` is a space, `%2B` a plus; a bad escape stays as it is).
pub fn query_param(uri: &str, param: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == param)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_tokens_are_valid_once() {
        let s = TokenStore::Embedded(EmbeddedStore::default());
        let age = Duration::from_secs(20);
        let t = s.mint("joe", Some("user"), age, age).await.unwrap();
        assert_eq!(t.len(), 43);
        match s.consume(&t, age).await.unwrap() {
            Consumed::Valid(r) => assert_eq!(
                (r.authid.as_str(), r.role.as_deref()),
                ("joe", Some("user"))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.consume(&t, age).await.unwrap(), Consumed::Used);
        let unknown = || OPS.snapshot().get("consume/unknown").copied().unwrap_or(0);
        let before = unknown();
        assert_eq!(s.consume("forged", age).await.unwrap(), Consumed::Unknown);
        // Other tests count into the same process-wide counters.
        assert!(unknown() > before, "a forged token is counted");
        assert!(OPS.snapshot().get("mint/ok").is_some_and(|n| *n > 0));
    }

    #[tokio::test]
    async fn expiry_uses_the_shorter_of_lifetime_and_max_age() {
        let s = TokenStore::Embedded(EmbeddedStore::default());
        let t = s
            .mint(
                "joe",
                None,
                Duration::from_millis(1),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            s.consume(&t, Duration::from_secs(20)).await.unwrap(),
            Consumed::Expired { .. }
        ));
        let t = s
            .mint(
                "joe",
                None,
                Duration::from_secs(20),
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        // A later, shorter max age applies too.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            s.consume(&t, Duration::from_millis(1)).await.unwrap(),
            Consumed::Expired { .. }
        ));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("/ws?ws_token=abc-_1", "ws_token").as_deref(),
            Some("abc-_1")
        );
        assert_eq!(
            query_param("/ws?a=1&ws_token=x%2By&b", "ws_token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param("/ws?a=1", "ws_token"), None);
        assert_eq!(query_param("/ws", "ws_token"), None);
        assert_eq!(
            query_param("/ws?ws_token=%zz%", "ws_token").as_deref(),
            Some("%zz%")
        );
    }

    #[test]
    fn log_labels_do_not_reveal_the_token() {
        let t = new_token();
        let l = log_label(&t);
        assert_eq!(l.len(), 8);
        assert!(!t.contains(&l));
    }
}
