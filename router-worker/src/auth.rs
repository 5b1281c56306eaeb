//! Authentication: who a session is, decided during the opening handshake.
//!
//! [`AuthSettings`] is one transport's `auth` config, resolved. The session
//! task calls [`AuthSettings::hello`] with the client's HELLO: the answer is
//! a principal at once (anonymous), or a CHALLENGE to send and a
//! [`PendingAuth`] that [`AuthSettings::authenticate`] finishes with the
//! client's AUTHENTICATE. Dynamic methods call an authenticator procedure
//! through [`crate::realm::RealmHandle::call`] in the realm the config names.
//!
//! Every refusal carries a WAMP URI and a message that names the method, the
//! authenticator and the cause; secrets and tickets never appear in either,
//! nor in the log. Failed attempts are counted per peer address
//! ([`FailureLimiter`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::errors::uri as wamp_uri;
use proto::message::{Authenticate, Challenge, Hello};
use proto::{Dict, Id, Payload, Value};
use tracing::warn;

use crate::Realms;
use crate::config::{
    AuthKind, CraUser, CryptosignPrincipal, MethodAuth, PeerCredAuth, SecretKind, TicketPrincipal,
    TransportConfig,
};
use crate::realm::InternalCallError;
use crate::tokens::{Consumed, TokenStore};
use std::sync::Arc;

/// Addresses tracked by the failure limiter at most; the oldest are
/// forgotten first, so a flood of addresses cannot grow memory.
const MAX_TRACKED_PEERS: usize = 65_536;

/// Why the handshake ends without a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The ABORT reason URI.
    pub reason: String,
    /// A message for the client (and the log).
    pub message: String,
    /// Counts against the peer's failure limit (wrong credentials, denied),
    /// unlike a server-side problem (authenticator missing or slow).
    pub counts: bool,
}

fn refuse(reason: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason: reason.to_owned(),
        message: message.into(),
        counts: false,
    }
}

fn not_enabled(method: &str) -> Refusal {
    refuse(
        wamp_uri::NO_AUTH_METHOD,
        format!("{method} is not enabled on this transport"),
    )
}

fn deny(reason: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        counts: true,
        ..refuse(reason, message)
    }
}

/// Who an authenticated session is.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Identity (may be rewritten by an authenticator).
    pub authid: String,
    /// Role for authorization.
    pub authrole: String,
    /// `anonymous`, `ticket`, `wampcra`, `cryptosign`.
    pub authmethod: String,
    /// `static` or `dynamic`.
    pub authprovider: String,
    /// The realm to join (may be rewritten by an authenticator).
    pub realm: String,
    /// Extra data for WELCOME's `authextra`.
    pub extra: Dict,
}

/// A handshake waiting for AUTHENTICATE.
#[derive(Debug)]
pub struct PendingAuth {
    kind: Pending,
}

#[derive(Debug)]
enum Pending {
    /// Static ticket: compare with the principal's ticket (None: unknown
    /// authid, which fails the same way as a wrong ticket).
    TicketStatic {
        authid: String,
        principal: Option<(TicketPrincipal, String)>,
    },
    /// Dynamic ticket: the authenticator decides once it has the ticket.
    TicketDynamic {
        authid: String,
        hello_realm: String,
        authextra: Dict,
    },
    /// WAMP-CRA: verify the HMAC of `challenge` under `key`.
    Cra {
        principal: Principal,
        key: Vec<u8>,
        challenge: String,
    },
    /// One-time token presented as the ticket.
    Token { hello_realm: String },
    /// Cryptosign: verify the Ed25519 signature of `challenge`.
    Cryptosign {
        principal: Principal,
        pubkey: String,
        challenge: [u8; 32],
    },
}

/// What HELLO leads to.
#[derive(Debug)]
pub enum Outcome {
    /// Authenticated already (anonymous).
    Welcome(Principal),
    /// Send this CHALLENGE, then finish with AUTHENTICATE.
    Challenge(Challenge, PendingAuth),
}

/// What the failure limiter says about a new attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// Go ahead after this pause: the address has failed often, with
    /// whatever authids. Bounded by `auth_failure_delay`, so a correct login
    /// from a busy NAT or proxy address is slowed a little, never refused.
    Delay(Duration),
    /// This authid has failed too often from this address: refused until
    /// the window has passed (the time left). `log` is true once per
    /// window, so that a storm of attempts is one line in the log.
    Locked { wait: Duration, log: bool },
}

/// Counts failed authentications in a sliding window: per (address,
/// claimed authid), which locks that pair out after `max` failures, and per
/// address, which only slows further attempts from it. Sans-IO: every
/// method takes the time, so tests use fake time.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    /// The longest pause for an address (`auth_failure_delay`).
    max_delay: Duration,
    /// A std Mutex: held for a few map operations, never across an await.
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Failure times per (address, authid).
    pairs: HashMap<(IpAddr, String), Failures>,
    /// Failure times per address, any authid (or none).
    addrs: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
    /// When the lockout was last logged.
    logged: Option<Instant>,
}

impl Failures {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.times.pop_front();
        }
    }
}

/// Whether `map` may take `key`: at most [`MAX_TRACKED_PEERS`] entries,
/// those without a failure in the window forgotten first, so that a flood
/// of addresses or authids cannot grow memory.
fn room_for<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Failures>,
    key: &K,
    now: Instant,
    window: Duration,
) -> bool {
    if map.len() < MAX_TRACKED_PEERS || map.contains_key(key) {
        return true;
    }
    map.retain(|_, f| {
        f.times
            .back()
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    });
    map.len() < MAX_TRACKED_PEERS
}

/// The pause per failure over the limit, before `max_delay` caps it.
const DELAY_STEP: Duration = Duration::from_millis(100);
/// Failures kept per address: enough to compute the pause, bounded.
const MAX_ADDR_FAILURES: usize = 1024;

impl FailureLimiter {
    /// Lock a pair out after `max` failures within `window`; pause an
    /// address's attempts by up to `max_delay` once it has failed more
    /// than `max` times.
    pub fn new(max: u32, window: Duration, max_delay: Duration) -> Self {
        FailureLimiter {
            max,
            window,
            max_delay,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// Whether an attempt from `ip`, claiming `authid`, may proceed.
    pub fn gate(&self, ip: IpAddr, authid: Option<&str>, now: Instant) -> Gate {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(authid) = authid
            && let Some(f) = st.pairs.get_mut(&(ip, authid.to_owned()))
        {
            f.expire(now, self.window);
            if f.times.len() as u32 >= self.max
                && let Some(first) = f.times.front()
            {
                let wait = self
                    .window
                    .saturating_sub(now.saturating_duration_since(*first));
                let log = f
                    .logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
                if log {
                    f.logged = Some(now);
                }
                return Gate::Locked { wait, log };
            }
        }
        let Some(f) = st.addrs.get_mut(&ip) else {
            return Gate::Open;
        };
        f.expire(now, self.window);
        let over = (f.times.len() as u32).saturating_sub(self.max);
        if over == 0 {
            return Gate::Open;
        }
        Gate::Delay(DELAY_STEP.saturating_mul(over).min(self.max_delay))
    }

    /// Record a failure of `ip` claiming `authid`; returns how many
    /// failures the address now has in the window.
    pub fn record(&self, ip: IpAddr, authid: Option<&str>, now: Instant) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let max = self.max as usize;
        if !room_for(&mut st.addrs, &ip, now, window) {
            return 0;
        }
        let f = st.addrs.entry(ip).or_default();
        f.expire(now, window);
        f.times.push_back(now);
        if f.times.len() > MAX_ADDR_FAILURES {
            f.times.pop_front();
        }
        let count = f.times.len();
        let Some(authid) = authid else {
            return count;
        };
        let key = (ip, authid.to_owned());
        if !room_for(&mut st.pairs, &key, now, window) {
            return count;
        }
        let f = st.pairs.entry(key).or_default();
        f.times.push_back(now);
        while f.times.len() > max.max(1) {
            f.times.pop_front();
        }
        count
    }
}

/// One transport's token login, resolved.
#[derive(Debug)]
pub struct TokenSettings {
    /// The store (shared by transports with the same store config).
    pub store: Arc<TokenStore>,
    /// How long a token is valid after minting.
    pub max_age: Duration,
    /// The URL query parameter carrying the token.
    pub query_param: String,
    /// The role for tokens without one.
    pub role: Option<String>,
}

/// One transport's authentication config, resolved.
#[derive(Debug)]
pub struct AuthSettings {
    /// One-time tokens, when configured.
    pub token: Option<TokenSettings>,
    /// Role for anonymous sessions; `None` when anonymous is not enabled.
    pub anonymous_role: Option<String>,
    /// The authid every anonymous session gets, when the config names one;
    /// else each gets a fresh random one. Never the client's choice: an
    /// authid decides `eligible_authid` and what callees see.
    anonymous_authid: Option<String>,
    ticket: Option<MethodAuth<TicketPrincipal>>,
    wampcra: Option<MethodAuth<CraUser>>,
    cryptosign: Option<MethodAuth<CryptosignPrincipal>>,
    peercred: Option<PeerCredAuth>,
    /// Deadline for AUTHENTICATE after CHALLENGE.
    pub authenticate_timeout: Duration,
    /// Deadline for a dynamic authenticator.
    pub authenticator_timeout: Duration,
    /// Failed attempts per peer address.
    pub limiter: FailureLimiter,
}

/// Everything about the connection the authenticator may need.
pub struct Context<'a> {
    /// All realms of the router.
    pub realms: &'a Realms,
    /// The session id the session will have (WAMP-CRA puts it in the
    /// challenge; authenticators get it).
    pub session: Id,
    /// Transport details (type, protocol, peer, HTTP headers).
    pub transport: &'a Dict,
}

impl Context<'_> {
    /// The `details` argument of a dynamic authenticator call, as
    /// Crossbar.io passes it.
    fn details(&self, authmethod: &str, authid: Value, authextra: Dict) -> Dict {
        proto::dict! {
            "session" => self.session,
            "authmethod" => authmethod,
            "authid" => authid,
            "authextra" => authextra,
            "transport" => self.transport.clone(),
        }
    }
}

/// What a dynamic authenticator said.
#[derive(Debug, Default)]
struct Verdict {
    role: String,
    authid: Option<String>,
    realm: Option<String>,
    extra: Dict,
    secret: Option<String>,
    salt: Option<String>,
    iterations: Option<u32>,
    keylen: Option<u32>,
    secret_kind: SecretKind,
    pubkey: Option<String>,
}

fn opt_string(d: &Dict, key: &str, procedure: &str) -> Result<Option<String>, Refusal> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!(
                "authenticator {procedure:?} returned {key:?} as a {}, expected a string",
                other.type_name()
            ),
        )),
    }
}

/// Like [`opt_string`], but also takes UTF-8 bytes: autobahn-python's
/// `derive_key()` returns the key as bytes, and authenticators pass it on.
fn opt_text(d: &Dict, key: &str, procedure: &str) -> Result<Option<String>, Refusal> {
    match d.get(key) {
        Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map(Some).map_err(|_| {
            refuse(
                wamp_uri::AUTHENTICATION_FAILED,
                format!(
                    "authenticator {procedure:?} returned {key:?} as bytes that are not UTF-8 text"
                ),
            )
        }),
        _ => opt_string(d, key, procedure),
    }
}

fn opt_u32(d: &Dict, key: &str, procedure: &str) -> Result<Option<u32>, Refusal> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| {
            refuse(
                wamp_uri::AUTHENTICATION_FAILED,
                format!("authenticator {procedure:?} returned {key:?} as {v}, expected a positive integer"),
            )
        }),
    }
}

fn parse_verdict(procedure: &str, payload: &Payload) -> Result<Verdict, Refusal> {
    let shape = "expected a role (string) or a dict with \"role\"";
    match payload.args.first() {
        Some(Value::Str(role)) => Ok(Verdict {
            role: role.clone(),
            ..Verdict::default()
        }),
        Some(Value::Dict(d)) => {
            let role = match d.get("role") {
                Some(Value::Str(r)) => r.clone(),
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned \"role\" as a {}; {shape}",
                            other.type_name()
                        ),
                    ));
                }
                None => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned a dict without \"role\"; {shape}"
                        ),
                    ));
                }
            };
            let extra = match d.get("extra") {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Dict(e)) => e.clone(),
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned \"extra\" as a {}, expected a dict",
                            other.type_name()
                        ),
                    ));
                }
            };
            let secret_kind = match opt_string(d, "secret-kind", procedure)?.as_deref() {
                None | Some("password") => SecretKind::Password,
                Some("derived-key") => SecretKind::DerivedKey,
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned secret-kind {other:?}, expected \"password\" or \"derived-key\""
                        ),
                    ));
                }
            };
            Ok(Verdict {
                role,
                authid: opt_string(d, "authid", procedure)?,
                realm: opt_string(d, "realm", procedure)?,
                extra,
                secret: opt_text(d, "secret", procedure)?,
                salt: opt_text(d, "salt", procedure)?,
                iterations: opt_u32(d, "iterations", procedure)?,
                keylen: opt_u32(d, "keylen", procedure)?,
                secret_kind,
                pubkey: opt_string(d, "pubkey", procedure)?,
            })
        }
        None | Some(Value::Null) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!("authenticator {procedure:?} returned nothing (null); {shape}"),
        )),
        Some(other) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!(
                "authenticator {procedure:?} returned a {}; {shape}",
                other.type_name()
            ),
        )),
    }
}

/// The WAMP-CRA key for a user: the secret's text, or for a salted secret
/// the derived key's base64 text (derived here from a password, or stored
/// already derived).
fn cra_key(
    secret: &str,
    salt: Option<&str>,
    iterations: Option<u32>,
    keylen: Option<u32>,
    kind: SecretKind,
) -> (Vec<u8>, Dict) {
    let Some(salt) = salt else {
        return (secret.as_bytes().to_vec(), Dict::new());
    };
    let iterations = iterations.unwrap_or(1000);
    let keylen = keylen.unwrap_or(32);
    let key = match kind {
        SecretKind::DerivedKey => secret.to_owned(),
        SecretKind::Password => proto::auth::derive_key(secret, salt, iterations, keylen as usize),
    };
    let extra = proto::dict! { "salt" => salt, "iterations" => u64::from(iterations), "keylen" => u64::from(keylen) };
    (key.into_bytes(), extra)
}

impl AuthSettings {
    /// Resolve a transport's `auth` and limits.
    pub fn from_config(t: &TransportConfig, token_store: Option<Arc<TokenStore>>) -> AuthSettings {
        let o = &t.options;
        let (ticket, wampcra, cryptosign, peercred) = match &t.auth {
            None => (None, None, None, None),
            Some(a) => (
                a.ticket.clone(),
                a.wampcra.clone(),
                a.cryptosign.clone(),
                a.peercred.clone(),
            ),
        };
        let token = match (t.auth.as_ref().and_then(|a| a.token.as_ref()), token_store) {
            (Some(cfg), Some(store)) => Some(TokenSettings {
                store,
                max_age: Duration::from_secs(cfg.max_age),
                query_param: cfg.query_param.clone(),
                role: cfg.role.clone(),
            }),
            _ => None,
        };
        AuthSettings {
            token,
            anonymous_role: t.anonymous_role().map(str::to_owned),
            anonymous_authid: t
                .auth
                .as_ref()
                .and_then(|a| a.anonymous.as_ref())
                .and_then(|a| a.authid.clone()),
            ticket,
            wampcra,
            cryptosign,
            peercred,
            authenticate_timeout: Duration::from_millis(o.authenticate_timeout),
            authenticator_timeout: Duration::from_millis(o.authenticator_timeout),
            limiter: FailureLimiter::new(
                o.max_auth_failures,
                Duration::from_millis(o.auth_failure_window),
                Duration::from_millis(o.auth_failure_delay),
            ),
        }
    }

    /// The methods enabled on this transport, in a fixed order.
    fn enabled(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.anonymous_role.is_some() {
            v.push("anonymous");
        }
        if self.ticket.is_some() {
            v.push("ticket");
        }
        if self.wampcra.is_some() {
            v.push("wampcra");
        }
        if self.cryptosign.is_some() {
            v.push("cryptosign");
        }
        if self.peercred.is_some() {
            v.push("peercred");
        }
        if self.token.is_some() {
            v.push("token");
            // A client may present its token as a WAMP ticket.
            if self.ticket.is_none() {
                v.push("ticket");
            }
        }
        v
    }

    /// Log in with a one-time token.
    async fn consume_token(
        &self,
        ctx: &Context<'_>,
        token: &str,
        realm: &str,
    ) -> Result<Principal, Refusal> {
        let Some(ts) = &self.token else {
            return Err(not_enabled("token"));
        };
        let label = crate::tokens::log_label(token);
        let outcome = ts.store.consume(token, ts.max_age).await.map_err(|e| {
            warn!(store = ts.store.kind(), cause = %e.0, "token login refused: the token store is unavailable");
            refuse(wamp_uri::AUTHENTICATION_FAILED, "token store unavailable: try again shortly")
        })?;
        let record = match outcome {
            Consumed::Valid(r) => r,
            Consumed::Unknown => {
                return Err(deny(
                    wamp_uri::NOT_AUTHORIZED,
                    format!("unknown token (label {label}): it was never issued, or it is forged"),
                ));
            }
            Consumed::Used => {
                return Err(deny(
                    wamp_uri::NOT_AUTHORIZED,
                    format!("token {label} was already used: a token is valid once"),
                ));
            }
            Consumed::Expired { ago } => {
                return Err(deny(
                    wamp_uri::NOT_AUTHORIZED,
                    format!(
                        "token {label} expired {ago} s ago: tokens are valid for {} s after minting",
                        ts.max_age.as_secs()
                    ),
                ));
            }
        };
        let Some(role) = record.role.clone().or_else(|| ts.role.clone()) else {
            return Err(refuse(
                wamp_uri::NOT_AUTHORIZED,
                format!(
                    "token {label} carries no role and the transport's token auth names no default role"
                ),
            ));
        };
        let principal = Principal {
            authid: record.authid,
            authrole: role,
            authmethod: "token".into(),
            authprovider: ts.store.kind().into(),
            realm: realm.to_owned(),
            extra: Dict::new(),
        };
        self.admit(ctx, principal, "the token")
    }

    /// Call a dynamic authenticator and turn its failures into refusals.
    async fn ask(
        &self,
        ctx: &Context<'_>,
        procedure: &str,
        authenticator_realm: Option<&str>,
        hello_realm: &str,
        authid: &str,
        details: Dict,
    ) -> Result<Verdict, Refusal> {
        let realm_name = authenticator_realm.unwrap_or(hello_realm);
        let Some(realm) = ctx.realms.get(realm_name) else {
            return Err(refuse(
                wamp_uri::NO_SUCH_REALM,
                format!("realm {realm_name:?} does not exist on this router"),
            ));
        };
        let payload = Payload::args(vec![hello_realm.into(), authid.into(), details.into()]);
        let answer = realm
            .call(procedure, payload, self.authenticator_timeout)
            .await;
        let payload = match answer {
            Ok(p) => p,
            Err(InternalCallError::NoSuchProcedure) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "authenticator {procedure:?} is not registered in realm {realm_name:?}"
                    ),
                ));
            }
            Err(InternalCallError::Timeout) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "authenticator {procedure:?} did not answer within {} ms",
                        self.authenticator_timeout.as_millis()
                    ),
                ));
            }
            Err(InternalCallError::Gone) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!("realm {realm_name:?} of authenticator {procedure:?} is shutting down"),
                ));
            }
            Err(InternalCallError::Error { uri, message }) => {
                // A deliberate denial keeps the authenticator's URI; a crash
                // in the authenticator is an authentication failure.
                let crashed = uri == "wamp.error.runtime_error" || uri == wamp_uri::CANCELED;
                let reason = if crashed {
                    wamp_uri::AUTHENTICATION_FAILED
                } else {
                    uri.as_str()
                };
                let what = if crashed { "failed" } else { "denied access" };
                return Err(deny(
                    reason,
                    format!("authenticator {procedure:?} {what} ({uri}): {message}"),
                ));
            }
        };
        parse_verdict(procedure, &payload)
    }

    /// Check a role the authenticator (or config) assigned exists.
    fn admit(
        &self,
        ctx: &Context<'_>,
        principal: Principal,
        source: &str,
    ) -> Result<Principal, Refusal> {
        if principal.realm.is_empty() {
            return Err(refuse(
                wamp_uri::NO_SUCH_REALM,
                format!(
                    "the client named no realm (HELLO's realm was null) and {source} assigned none: name a realm in HELLO"
                ),
            ));
        }
        let Some(realm) = ctx.realms.get(&principal.realm) else {
            return Err(refuse(
                wamp_uri::NO_SUCH_REALM,
                format!("realm {:?} does not exist on this router", principal.realm),
            ));
        };
        if !realm.authz().has_role(&principal.authrole) {
            return Err(refuse(
                wamp_uri::NO_SUCH_ROLE,
                format!(
                    "{source} assigned role {:?}, which realm {:?} does not define",
                    principal.authrole, principal.realm
                ),
            ));
        }
        Ok(principal)
    }

    /// The principal the connecting user maps to, if listed (by uid or
    /// user name).
    fn peer_principal(
        &self,
        pc: &PeerCredAuth,
        ctx: &Context<'_>,
        hello_realm: &str,
    ) -> Result<Option<Principal>, Refusal> {
        let Some(uid) = ctx.transport.get("peer_uid").and_then(Value::as_u64) else {
            return Ok(None);
        };
        let name = u32::try_from(uid)
            .ok()
            .and_then(|u| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                    .ok()
                    .flatten()
            })
            .map(|u| u.name);
        // By uid, by user name, else "*": any user who can open the socket
        // (its file mode decides who can).
        let entry = pc
            .principals
            .get(&uid.to_string())
            .or_else(|| name.as_ref().and_then(|n| pc.principals.get(n)))
            .or_else(|| pc.principals.get("*"));
        let Some(pr) = entry else {
            return Ok(None);
        };
        // A HELLO without a realm (null) joins the principal's.
        if let Some(r) = &pr.realm
            && !hello_realm.is_empty()
            && r != hello_realm
        {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                format!("the connecting user (uid {uid}) may only join realm {r:?}"),
            ));
        }
        Ok(Some(Principal {
            authid: pr
                .authid
                .clone()
                .or(name)
                .unwrap_or_else(|| uid.to_string()),
            authrole: pr.role.clone(),
            authmethod: "peercred".into(),
            authprovider: "static".into(),
            realm: pr.realm.clone().unwrap_or_else(|| hello_realm.to_owned()),
            extra: Dict::new(),
        }))
    }

    /// Decide what to do with HELLO: welcome, challenge, or refuse.
    ///
    /// # Errors
    /// A [`Refusal`] with the ABORT reason and message.
    pub async fn hello(&self, hello: &Hello, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let offered: Vec<String> = match hello.details.get("authmethods") {
            None | Some(Value::Null) => vec!["anonymous".into()],
            Some(Value::List(l)) => {
                let mut v = Vec::with_capacity(l.len());
                for m in l {
                    match m.as_str() {
                        Some(s) => v.push(s.to_owned()),
                        None => {
                            return Err(refuse(
                                wamp_uri::PROTOCOL_VIOLATION,
                                format!(
                                    "HELLO.Details.authmethods must be a list of strings, found a {}",
                                    m.type_name()
                                ),
                            ));
                        }
                    }
                }
                v
            }
            Some(other) => {
                return Err(refuse(
                    wamp_uri::PROTOCOL_VIOLATION,
                    format!(
                        "HELLO.Details.authmethods must be a list of strings, found {}",
                        other.type_name()
                    ),
                ));
            }
        };
        let authid = match hello.details.get("authid") {
            None | Some(Value::Null) => None,
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(refuse(
                    wamp_uri::PROTOCOL_VIOLATION,
                    "HELLO.Details.authid must be a non-empty string",
                ));
            }
        };
        let authextra = match hello.details.get("authextra") {
            None | Some(Value::Null) => Dict::new(),
            Some(Value::Dict(d)) => d.clone(),
            Some(other) => {
                return Err(refuse(
                    wamp_uri::PROTOCOL_VIOLATION,
                    format!(
                        "HELLO.Details.authextra must be a dict, found {}",
                        other.type_name()
                    ),
                ));
            }
        };
        // A token in the URL logs the session in, whatever it offered.
        if let Some(ts) = &self.token
            && let Some(Value::Str(uri)) = ctx.transport.get("http_request_uri")
            && let Some(token) = crate::tokens::query_param(uri, &ts.query_param)
        {
            return self
                .consume_token(ctx, &token, &hello.realm)
                .await
                .map(Outcome::Welcome);
        }
        // A local user listed for peer credentials is known without a
        // challenge when it offers nothing else (or "peercred").
        if let Some(pc) = &self.peercred
            && offered.iter().all(|m| m == "anonymous" || m == "peercred")
        {
            match self.peer_principal(pc, ctx, &hello.realm)? {
                Some(principal) => {
                    return self
                        .admit(ctx, principal, "peer-credential authentication")
                        .map(Outcome::Welcome);
                }
                None if offered.iter().all(|m| m == "peercred") => {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "the connecting user ({}) is not listed in this transport's auth.peercred.principals",
                            ctx.transport
                                .get("peer_uid")
                                .and_then(Value::as_u64)
                                .map_or("unknown uid".to_owned(), |u| format!("uid {u}"))
                        ),
                    ));
                }
                None => {}
            }
        }
        let enabled = self.enabled();
        let Some(method) = offered.iter().find(|m| enabled.contains(&m.as_str())) else {
            return Err(deny(
                wamp_uri::NO_AUTH_METHOD,
                format!(
                    "none of the offered authmethods ({}) is enabled on this transport; it accepts: {}",
                    offered.join(", "),
                    enabled.join(", ")
                ),
            ));
        };
        let realm = hello.realm.as_str();
        match method.as_str() {
            "anonymous" => {
                let role = self.anonymous_role.clone().unwrap_or_default();
                // The HELLO's authid is a wish nobody vouched for.
                let principal = Principal {
                    authid: self.anonymous_authid.clone().unwrap_or_else(random_authid),
                    authrole: role,
                    authmethod: "anonymous".into(),
                    authprovider: "static".into(),
                    realm: realm.to_owned(),
                    extra: Dict::new(),
                };
                self.admit(ctx, principal, "anonymous authentication")
                    .map(Outcome::Welcome)
            }
            "token" | "ticket" if self.ticket.is_none() => Ok(Outcome::Challenge(
                Challenge {
                    authmethod: "ticket".into(),
                    extra: Dict::new(),
                },
                PendingAuth {
                    kind: Pending::Token {
                        hello_realm: realm.to_owned(),
                    },
                },
            )),
            "ticket" => {
                let Some(m) = &self.ticket else {
                    return Err(not_enabled("ticket"));
                };
                let Some(authid) = authid else {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        "ticket authentication needs an authid in HELLO",
                    ));
                };
                let kind = match m.kind {
                    AuthKind::Static => Pending::TicketStatic {
                        principal: m
                            .principals
                            .get(&authid)
                            .map(|p| (p.clone(), realm.to_owned())),
                        authid,
                    },
                    AuthKind::Dynamic => Pending::TicketDynamic {
                        authid,
                        hello_realm: realm.to_owned(),
                        authextra,
                    },
                };
                Ok(Outcome::Challenge(
                    Challenge {
                        authmethod: "ticket".into(),
                        extra: Dict::new(),
                    },
                    PendingAuth { kind },
                ))
            }
            "wampcra" => {
                let Some(m) = &self.wampcra else {
                    return Err(not_enabled("wampcra"));
                };
                let Some(authid) = authid else {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        "WAMP-CRA authentication needs an authid in HELLO",
                    ));
                };
                let (principal, key, salt_extra) = match m.kind {
                    AuthKind::Static => match m.principals.get(&authid) {
                        Some(u) => {
                            let (key, extra) = cra_key(
                                &u.secret,
                                u.salt.as_deref(),
                                u.iterations,
                                u.keylen,
                                u.secret_kind,
                            );
                            let principal = Principal {
                                authid: authid.clone(),
                                authrole: u.role.clone(),
                                authmethod: "wampcra".into(),
                                authprovider: "static".into(),
                                realm: u.realm.clone().unwrap_or_else(|| realm.to_owned()),
                                extra: Dict::new(),
                            };
                            (principal, key, extra)
                        }
                        // Unknown user: challenge anyway with a key nobody
                        // knows, so the answer does not reveal who exists.
                        None => (
                            Principal {
                                authid: authid.clone(),
                                authrole: String::new(),
                                authmethod: "wampcra".into(),
                                authprovider: "static".into(),
                                realm: realm.to_owned(),
                                extra: Dict::new(),
                            },
                            proto::auth::random_bytes::<32>().to_vec(),
                            Dict::new(),
                        ),
                    },
                    AuthKind::Dynamic => {
                        let procedure = m.authenticator.clone().unwrap_or_default();
                        let details =
                            ctx.details("wampcra", authid.as_str().into(), authextra.clone());
                        let v = self
                            .ask(
                                ctx,
                                &procedure,
                                m.authenticator_realm.as_deref(),
                                realm,
                                &authid,
                                details,
                            )
                            .await?;
                        let Some(secret) = v.secret.as_deref() else {
                            return Err(refuse(
                                wamp_uri::AUTHENTICATION_FAILED,
                                format!(
                                    "authenticator {procedure:?} returned no \"secret\" for WAMP-CRA user {authid:?}"
                                ),
                            ));
                        };
                        let (key, extra) = cra_key(
                            secret,
                            v.salt.as_deref(),
                            v.iterations,
                            v.keylen,
                            v.secret_kind,
                        );
                        let principal = Principal {
                            authid: v.authid.clone().unwrap_or_else(|| authid.clone()),
                            authrole: v.role.clone(),
                            authmethod: "wampcra".into(),
                            authprovider: "dynamic".into(),
                            realm: v.realm.clone().unwrap_or_else(|| realm.to_owned()),
                            extra: v.extra,
                        };
                        let principal =
                            self.admit(ctx, principal, &format!("authenticator {procedure:?}"))?;
                        (principal, key, extra)
                    }
                };
                let challenge = serde_json::json!({
                    "authid": principal.authid,
                    "authrole": principal.authrole,
                    "authmethod": "wampcra",
                    "authprovider": principal.authprovider,
                    "nonce": proto::auth::nonce(),
                    "timestamp": crate::time::now_iso8601(),
                    "session": ctx.session,
                })
                .to_string();
                let mut extra = salt_extra;
                extra.insert("challenge".into(), Value::from(challenge.as_str()));
                Ok(Outcome::Challenge(
                    Challenge {
                        authmethod: "wampcra".into(),
                        extra,
                    },
                    PendingAuth {
                        kind: Pending::Cra {
                            principal,
                            key,
                            challenge,
                        },
                    },
                ))
            }
            "cryptosign" => {
                let Some(m) = &self.cryptosign else {
                    return Err(not_enabled("cryptosign"));
                };
                let pubkey = match authextra.get("pubkey") {
                    Some(Value::Str(k)) if proto::auth::parse_pubkey(k).is_ok() => {
                        k.to_ascii_lowercase()
                    }
                    _ => {
                        return Err(deny(
                            wamp_uri::AUTHENTICATION_FAILED,
                            "cryptosign needs HELLO.Details.authextra.pubkey: the client's Ed25519 public key as 64 hex characters",
                        ));
                    }
                };
                let principal = match m.kind {
                    AuthKind::Static => {
                        let found = m.principals.iter().find(|(id, p)| {
                            authid.as_ref().is_none_or(|a| a == *id)
                                && p.authorized_keys
                                    .iter()
                                    .any(|k| k.eq_ignore_ascii_case(&pubkey))
                        });
                        let Some((id, p)) = found else {
                            return Err(deny(
                                wamp_uri::AUTHENTICATION_FAILED,
                                "no principal is authorized for this public key",
                            ));
                        };
                        Principal {
                            authid: id.clone(),
                            authrole: p.role.clone(),
                            authmethod: "cryptosign".into(),
                            authprovider: "static".into(),
                            realm: p.realm.clone().unwrap_or_else(|| realm.to_owned()),
                            extra: Dict::new(),
                        }
                    }
                    AuthKind::Dynamic => {
                        let procedure = m.authenticator.clone().unwrap_or_default();
                        let authid_value = authid.clone().map_or(Value::Null, Value::from);
                        let details = ctx.details("cryptosign", authid_value, authextra.clone());
                        let v = self
                            .ask(
                                ctx,
                                &procedure,
                                m.authenticator_realm.as_deref(),
                                realm,
                                authid.as_deref().unwrap_or(""),
                                details,
                            )
                            .await?;
                        if let Some(k) = &v.pubkey
                            && !k.eq_ignore_ascii_case(&pubkey)
                        {
                            return Err(deny(
                                wamp_uri::AUTHENTICATION_FAILED,
                                format!(
                                    "authenticator {procedure:?} authorized a different public key"
                                ),
                            ));
                        }
                        let principal = Principal {
                            authid: v
                                .authid
                                .clone()
                                .or(authid.clone())
                                .unwrap_or_else(|| pubkey.clone()),
                            authrole: v.role.clone(),
                            authmethod: "cryptosign".into(),
                            authprovider: "dynamic".into(),
                            realm: v.realm.clone().unwrap_or_else(|| realm.to_owned()),
                            extra: v.extra,
                        };
                        self.admit(ctx, principal, &format!("authenticator {procedure:?}"))?
                    }
                };
                let challenge: [u8; 32] = proto::auth::random_bytes();
                Ok(Outcome::Challenge(
                    Challenge {
                        authmethod: "cryptosign".into(),
                        extra: proto::dict! { "challenge" => hex::encode(challenge), "channel_binding" => Value::Null },
                    },
                    PendingAuth {
                        kind: Pending::Cryptosign {
                            principal,
                            pubkey,
                            challenge,
                        },
                    },
                ))
            }
            _ => Err(refuse(wamp_uri::NO_AUTH_METHOD, "unsupported authmethod")),
        }
    }

    /// Finish a challenged handshake with the client's AUTHENTICATE.
    ///
    /// # Errors
    /// A [`Refusal`] with the ABORT reason and message.
    pub async fn authenticate(
        &self,
        pending: PendingAuth,
        a: &Authenticate,
        ctx: &Context<'_>,
    ) -> Result<Principal, Refusal> {
        match pending.kind {
            Pending::TicketStatic { authid, principal } => {
                let ok = principal.as_ref().is_some_and(|(p, _)| {
                    subtle::ConstantTimeEq::ct_eq(p.ticket.as_bytes(), a.signature.as_bytes())
                        .into()
                });
                let Some((p, realm)) = principal.filter(|_| ok) else {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "ticket authentication failed for authid {authid:?}: unknown authid or wrong ticket"
                        ),
                    ));
                };
                let principal = Principal {
                    authid,
                    authrole: p.role,
                    authmethod: "ticket".into(),
                    authprovider: "static".into(),
                    realm: p.realm.unwrap_or(realm),
                    extra: Dict::new(),
                };
                self.admit(ctx, principal, "the ticket principal")
            }
            Pending::TicketDynamic {
                authid,
                hello_realm,
                authextra,
            } => {
                let Some(m) = &self.ticket else {
                    return Err(not_enabled("ticket"));
                };
                let procedure = m.authenticator.clone().unwrap_or_default();
                let mut details = ctx.details("ticket", authid.as_str().into(), authextra);
                details.insert("ticket".into(), a.signature.as_str().into());
                let v = self
                    .ask(
                        ctx,
                        &procedure,
                        m.authenticator_realm.as_deref(),
                        &hello_realm,
                        &authid,
                        details,
                    )
                    .await?;
                let principal = Principal {
                    authid: v.authid.unwrap_or(authid),
                    authrole: v.role,
                    authmethod: "ticket".into(),
                    authprovider: "dynamic".into(),
                    realm: v.realm.unwrap_or(hello_realm),
                    extra: v.extra,
                };
                self.admit(ctx, principal, &format!("authenticator {procedure:?}"))
            }
            Pending::Token { hello_realm } => {
                self.consume_token(ctx, &a.signature, &hello_realm).await
            }
            Pending::Cra {
                principal,
                key,
                challenge,
            } => {
                if principal.authrole.is_empty()
                    || !proto::auth::cra_verify(&key, &challenge, &a.signature)
                {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "WAMP-CRA authentication failed for authid {:?}: unknown authid or wrong signature",
                            principal.authid
                        ),
                    ));
                }
                self.admit(ctx, principal, "WAMP-CRA")
            }
            Pending::Cryptosign {
                principal,
                pubkey,
                challenge,
            } => {
                if let Err(e) = proto::auth::cryptosign_verify(&pubkey, &challenge, &a.signature) {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "cryptosign authentication failed for authid {:?}: {e}",
                            principal.authid
                        ),
                    ));
                }
                self.admit(ctx, principal, "cryptosign")
            }
        }
    }

    /// Count a failed attempt of `ip` claiming `authid` and log it (never
    /// with a credential).
    pub fn record_failure(&self, ip: Option<IpAddr>, authid: Option<&str>, r: &Refusal) {
        if let Some(ip) = ip
            && r.counts
        {
            // An address that fails more than the limit is slowed; its
            // further failures in the window go to the debug log, so that a
            // storm is a few lines, not one per attempt.
            let n = self.limiter.record(ip, authid, Instant::now());
            let max = self.limiter.max as usize;
            if n <= max {
                warn!(peer = %ip, reason = %r.reason, "authentication failed: {}", r.message);
            } else if n == max + 1 {
                warn!(peer = %ip, failures = n, "authentication failed again: this address's attempts are now slowed (options.auth_failure_delay); further failures in the window are logged at debug");
            } else {
                tracing::debug!(peer = %ip, reason = %r.reason, "authentication failed: {}", r.message);
            }
        }
    }
}

/// An authid for anonymous sessions, in Crossbar.io's style.
pub fn random_authid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut s = String::with_capacity(29);
    for i in 0..24 {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(ALPHABET[rand::random_range(0..ALPHABET.len())] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> (FailureLimiter, Instant) {
        let l = FailureLimiter::new(3, Duration::from_secs(60), Duration::from_secs(1));
        (l, Instant::now())
    }

    #[test]
    fn a_pair_is_locked_out_after_max_failures() {
        let (l, t0) = limiter();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..3 {
            assert_eq!(l.gate(a, Some("joe"), t0), Gate::Open, "attempt {i}");
            l.record(a, Some("joe"), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.gate(a, Some("joe"), t1),
            Gate::Locked {
                wait: Duration::from_secs(50),
                log: true
            }
        );
        // Logged once per window, however often it is tried.
        assert!(matches!(
            l.gate(a, Some("joe"), t1),
            Gate::Locked { log: false, .. }
        ));
        // Another user behind the same address, anonymous from it, and joe
        // from elsewhere are not refused.
        assert_eq!(l.gate(a, Some("ann"), t1), Gate::Open);
        assert_eq!(l.gate(a, None, t1), Gate::Open);
        assert_eq!(l.gate(b, Some("joe"), t1), Gate::Open);
        // The window passes.
        assert_eq!(
            l.gate(a, Some("joe"), t0 + Duration::from_secs(61)),
            Gate::Open
        );
    }

    #[test]
    fn a_busy_address_is_slowed_within_a_bound_never_refused() {
        let (l, t0) = limiter();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // A storm over many authids (credential stuffing).
        for i in 0..4 {
            l.record(a, Some(&format!("user{i}")), t0);
        }
        assert_eq!(
            l.gate(a, Some("ann"), t0),
            Gate::Delay(Duration::from_millis(100))
        );
        for i in 0..100 {
            l.record(a, Some(&format!("more{i}")), t0);
        }
        assert_eq!(
            l.gate(a, Some("ann"), t0),
            Gate::Delay(Duration::from_secs(1)),
            "capped at auth_failure_delay"
        );
        assert_eq!(l.gate(a, None, t0), Gate::Delay(Duration::from_secs(1)));
        assert_eq!(
            l.gate(a, None, t0 + Duration::from_secs(61)),
            Gate::Open,
            "the window passes"
        );
    }

    #[test]
    fn authenticator_answers_are_checked() {
        let p = |v: Value| Payload::args(vec![v]);
        assert_eq!(parse_verdict("a", &p("user".into())).unwrap().role, "user");
        let e = parse_verdict("com.auth", &Payload::default()).unwrap_err();
        assert!(
            e.message.contains("returned nothing (null)") && e.message.contains("com.auth"),
            "{}",
            e.message
        );
        let e = parse_verdict("a", &p(Value::Int(3))).unwrap_err();
        assert!(e.message.contains("returned a integer"), "{}", e.message);
        let e = parse_verdict("a", &p(Value::Dict(proto::dict! {"authid" => "x"}))).unwrap_err();
        assert!(e.message.contains("without \"role\""), "{}", e.message);
        let v = parse_verdict(
            "a",
            &p(Value::Dict(proto::dict! {"role" => "r", "authid" => "ID09125", "extra" => proto::dict!{"k" => 1i64}})),
        )
        .unwrap();
        assert_eq!(
            (v.role.as_str(), v.authid.as_deref()),
            ("r", Some("ID09125"))
        );
        assert_eq!(v.extra.len(), 1);
    }

    #[test]
    fn cra_keys_for_both_secret_kinds() {
        let (derived, extra) = cra_key(
            "secret1",
            Some("salt123"),
            Some(100),
            Some(16),
            SecretKind::Password,
        );
        assert_eq!(derived, b"prq7+YkJ1/KlW1X0YczMHw==");
        assert_eq!(extra.get("iterations"), Some(&Value::Int(100)));
        let (stored, _) = cra_key(
            "prq7+YkJ1/KlW1X0YczMHw==",
            Some("salt123"),
            Some(100),
            Some(16),
            SecretKind::DerivedKey,
        );
        assert_eq!(stored, derived);
        let (plain, extra) = cra_key("pw", None, None, None, SecretKind::Password);
        assert_eq!(plain, b"pw");
        assert!(extra.is_empty());
    }
}
