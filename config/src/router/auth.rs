//! `auth`: authentication methods, their principals, cookies, and the
//! checks of them.

use super::*;

/// Per-transport authentication, keyed by method as in Crossbar.io.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Anonymous access.
    #[serde(default)]
    pub anonymous: Option<AnonymousAuth>,
    /// WAMP-Ticket.
    #[serde(default)]
    pub ticket: Option<MethodAuth<TicketPrincipal>>,
    /// WAMP-CRA.
    #[serde(default)]
    pub wampcra: Option<MethodAuth<CraUser>>,
    /// WAMP-cryptosign.
    #[serde(default)]
    pub cryptosign: Option<MethodAuth<CryptosignPrincipal>>,
    /// TLS client certificates (the endpoint's `tls.ca_certificates`
    /// verifies them): principals by certificate fingerprint.
    #[serde(default)]
    pub tls: Option<MethodAuth<TlsPrincipal>>,
    /// Cookie authentication: a browser whose tracking cookie logged in
    /// before is welcomed as the same principal (needs the transport's
    /// `cookie`).
    #[serde(default)]
    pub cookie: Option<CookieAuth>,
    /// WAMP-SCRAM: the router keeps derived keys, never the password.
    #[serde(default)]
    pub scram: Option<MethodAuth<ScramPrincipal>>,
    /// One-time login tokens from a token store.
    #[serde(default)]
    pub token: Option<TokenAuth>,
    /// Unix-socket transports only: the connecting process's user
    /// (SO_PEERCRED) decides the session's identity and role.
    #[serde(default)]
    pub peercred: Option<PeerCredAuth>,
}

impl AuthConfig {
    /// The kinds of the methods that have one (anonymous, ticket, wampcra,
    /// cryptosign).
    pub fn method_kinds(&self) -> Vec<(&'static str, AuthKind)> {
        [
            ("anonymous", self.anonymous.as_ref().map(|m| m.kind)),
            ("ticket", self.ticket.as_ref().map(|m| m.kind)),
            ("wampcra", self.wampcra.as_ref().map(|m| m.kind)),
            ("cryptosign", self.cryptosign.as_ref().map(|m| m.kind)),
            ("scram", self.scram.as_ref().map(|m| m.kind)),
            ("tls", self.tls.as_ref().map(|m| m.kind)),
        ]
        .into_iter()
        .filter_map(|(n, k)| Some((n, k?)))
        .collect()
    }
}

/// Peer-credential authentication: a local process is known by its user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerCredAuth {
    /// Must be `static`.
    #[serde(rename = "type", default = "static_kind")]
    pub kind: String,
    /// By user name or numeric uid (as a string), or `*` for any user who
    /// can open the socket: who the session is.
    pub principals: BTreeMap<String, PeerCredPrincipal>,
}

/// The identity a local user gets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerCredPrincipal {
    /// The role.
    pub role: String,
    /// The authid; the user name (else the uid) when absent.
    #[serde(default)]
    pub authid: Option<String>,
    /// The only realm this user may join; any when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// One-time token login: a ticket-style method whose principal comes from
/// a token store. The token arrives as a query parameter of the WebSocket
/// URL or as the WAMP ticket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenAuth {
    /// Where tokens live (embedded by default).
    #[serde(default)]
    pub store: TokenStoreConfig,
    /// Seconds a token is valid after minting.
    #[serde(rename = "max-age", default = "default_token_age")]
    pub max_age: u64,
    /// The URL query parameter carrying the token.
    #[serde(rename = "query-param", default = "default_token_param")]
    pub query_param: String,
    /// The role for tokens minted without one.
    #[serde(default)]
    pub role: Option<String>,
}

fn default_token_age() -> u64 {
    20
}
fn default_token_param() -> String {
    "ws_token".into()
}

/// A token store.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenStoreConfig {
    /// `embedded` (default) or `redis`.
    #[serde(rename = "type", default)]
    pub kind: TokenStoreKind,
    /// Redis URL (`redis://host:port`), default `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis database number.
    #[serde(default)]
    pub database: Option<i64>,
    /// Redis key prefix, default `trellis:token:`.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Token store kinds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenStoreKind {
    /// In the router's memory.
    #[default]
    Embedded,
    /// In Redis.
    Redis,
}

/// Anonymous authentication: every session gets `role`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnonymousAuth {
    /// `static` (the config gives role and authid), `dynamic` (an
    /// authenticator procedure decides, Crossbar.io's shape) or `function`.
    #[serde(rename = "type", default = "static_auth_kind")]
    pub kind: AuthKind,
    /// The role anonymous sessions get (static).
    #[serde(default = "anonymous_role")]
    pub role: String,
    /// The authid anonymous sessions get (Crossbar.io's key); without it
    /// each session gets a fresh random one. The client's HELLO authid is
    /// never used.
    #[serde(default)]
    pub authid: Option<String>,
    /// The only realm anonymous sessions may join; a HELLO without a realm
    /// joins it. Any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
    /// `dynamic`: the authenticator procedure, called with `(realm, authid,
    /// details)` (authid: the HELLO's, or null) and answering a role or
    /// `{role, authid, realm, extra}`.
    #[serde(default)]
    pub authenticator: Option<String>,
    /// `dynamic`: the realm the authenticator is registered in.
    #[serde(rename = "authenticator-realm", default)]
    pub authenticator_realm: Option<String>,
    /// `function`: the Python callable that creates the authenticator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// `function`: the first argument of `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `function`: accepted, as for the other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_controller: Option<bool>,
    /// Whatever methods the client offers (the private link of a Python
    /// router component, which Crossbar.io joins without authentication);
    /// set by the router itself, not a config key.
    #[serde(skip)]
    pub any_method: bool,
}

impl AnonymousAuth {
    /// A static anonymous login with a fixed role (the router's private
    /// links).
    pub fn fixed(
        role: &str,
        authid: Option<String>,
        realm: Option<String>,
        any_method: bool,
    ) -> AnonymousAuth {
        AnonymousAuth {
            kind: AuthKind::Static,
            role: role.to_owned(),
            authid,
            realm,
            authenticator: None,
            authenticator_realm: None,
            create: None,
            config: None,
            expose_controller: None,
            any_method,
        }
    }

    /// Its authenticator fields as the other methods have them (no
    /// principals), for the checks and the function rewrite they share.
    pub fn as_method(&self) -> MethodAuth<()> {
        MethodAuth {
            kind: self.kind,
            principals: BTreeMap::new(),
            authenticator: self.authenticator.clone(),
            authenticator_realm: self.authenticator_realm.clone(),
            create: self.create.clone(),
            config: self.config.clone(),
            expose_controller: self.expose_controller,
            trustroots: None,
        }
    }

    /// Take back the authenticator fields of [`AnonymousAuth::as_method`].
    pub fn set_method(&mut self, m: MethodAuth<()>) {
        self.kind = m.kind;
        self.authenticator = m.authenticator;
        self.authenticator_realm = m.authenticator_realm;
        self.create = m.create;
        self.config = m.config;
        self.expose_controller = m.expose_controller;
    }
}

fn static_auth_kind() -> AuthKind {
    AuthKind::Static
}
fn static_kind() -> String {
    "static".into()
}
pub(super) fn anonymous_role() -> String {
    "anonymous".into()
}

/// Static or dynamic: where principals come from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// Principals listed in the config.
    Static,
    /// Principals decided by an authenticator procedure.
    Dynamic,
    /// Principals decided by a Python function (Crossbar.io's `create`:
    /// `create(config, controller)` returns `authenticate(realm, authid,
    /// details)`), which the router worker runs as a dynamic authenticator
    /// in a realm of its own ([`INTERNAL_REALM_PREFIX`]).
    Function,
}

/// Realms whose names start so are the router's own (the realm of its
/// function authenticators): no config may name one, and only the
/// router's private links may join one.
pub const INTERNAL_REALM_PREFIX: &str = "trellis.internal.";

/// One authentication method (ticket, wampcra, cryptosign). Static methods
/// list principals (`principals`, or `users` as Crossbar.io spells it for
/// WAMP-CRA); dynamic ones name the authenticator procedure and optionally
/// the realm it is registered in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodAuth<P> {
    /// `static` or `dynamic`.
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Static principals by authid.
    #[serde(default = "BTreeMap::new", alias = "users")]
    pub principals: BTreeMap<String, P>,
    /// The authenticator procedure (dynamic).
    #[serde(default)]
    pub authenticator: Option<String>,
    /// The realm the authenticator is registered in (dynamic); the realm the
    /// client asked for when absent.
    #[serde(rename = "authenticator-realm", default)]
    pub authenticator_realm: Option<String>,
    /// `function`: the Python callable that creates the authenticator
    /// (`package.module.create_authenticator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// `function`: the first argument of `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `function`: Crossbar.io passes its controller session to `create`
    /// then; Trellis passes `None` either way (accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_controller: Option<bool>,
    /// Crossbar.io's cryptosign `trustroots` (clients vouched for by a
    /// certificate chain to a trusted root): read only to name it as not
    /// supported.
    #[serde(default, skip_serializing)]
    pub trustroots: Option<serde_json::Value>,
}

/// A static ticket principal.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TicketPrincipal {
    /// The ticket (a shared secret).
    pub ticket: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// How a WAMP-CRA user's `secret` is stored.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// The plain password; with `salt` the router derives the key itself
    /// (Crossbar.io 26).
    #[default]
    Password,
    /// The already derived key, base64 (`derive_key(password, salt, ...)`),
    /// as the seed's user database stores it: the password never reaches
    /// the router.
    DerivedKey,
}

/// A WAMP-CRA user: a static `wampcra` principal, and a user of the
/// built-in user database (`trellis.auth.UserDatabase`), which answers
/// dynamic WAMP-CRA and ticket logins with these fields.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CraUser {
    /// The password, or the derived key (see `secret-kind`).
    pub secret: String,
    /// The role the user gets.
    pub role: String,
    /// The realm the user may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
    /// The authid the session gets instead of the name it logged in with.
    #[serde(default)]
    pub authid: Option<String>,
    /// Extra data for the client's WELCOME (`authextra`).
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
    /// PBKDF2 salt: the client derives its key with it.
    #[serde(default)]
    pub salt: Option<String>,
    /// PBKDF2 iterations (default 1000 when `salt` is set).
    #[serde(default)]
    pub iterations: Option<u32>,
    /// PBKDF2 key length in bytes (default 32 when `salt` is set).
    #[serde(default)]
    pub keylen: Option<u32>,
    /// What `secret` holds.
    #[serde(rename = "secret-kind", default)]
    pub secret_kind: SecretKind,
}

impl SecretKind {
    /// The config and wire name (`password`, `derived-key`).
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::DerivedKey => "derived-key",
        }
    }
}

/// A static cryptosign principal.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CryptosignPrincipal {
    /// Ed25519 public keys (hex) that may log in as this principal.
    pub authorized_keys: Vec<String>,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// Crossbar.io's `auth.cookie`: no settings (`{}`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CookieAuth {}

/// Cookie tracking on a WebSocket transport or path, in Crossbar.io's
/// shape, with Trellis's `secure`, `same_site` and `max_cookies`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// The cookie's name (`^[a-z][a-z0-9_]+$`).
    #[serde(default = "cookie_name")]
    pub name: String,
    /// Characters of the random cookie value (12 to 64).
    #[serde(default = "cookie_length")]
    pub length: usize,
    /// Seconds a cookie lives (Crossbar.io's default: a week).
    #[serde(default = "cookie_max_age")]
    pub max_age: u64,
    /// Where cookies are kept.
    #[serde(default)]
    pub store: CookieStoreConfig,
    /// Send the cookie only over HTTPS; by default when the endpoint has
    /// TLS.
    #[serde(default)]
    pub secure: Option<bool>,
    /// The cookie's `SameSite`: `strict`, `lax` (default) or `none`
    /// (which needs `secure`).
    #[serde(default = "cookie_same_site")]
    pub same_site: String,
    /// The most cookies kept; the oldest go first.
    #[serde(default = "cookie_max_cookies")]
    pub max_cookies: usize,
    /// Crossbar.io's switch for `HttpOnly`, which Trellis always sets;
    /// `false` is warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_strict: Option<bool>,
}

/// A cookie store: `memory` (lost on restart) or `file` (logins kept
/// across restarts, in `filename`, relative to the node directory).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CookieStoreConfig {
    /// `memory` or `file`.
    #[serde(rename = "type", default = "cookie_store_memory")]
    pub kind: String,
    /// `file`: the file.
    #[serde(default = "cookie_filename")]
    pub filename: String,
    /// `file`: forget the stored cookies at start.
    #[serde(default)]
    pub purge_on_startup: bool,
    /// Crossbar.io's `database` store's keys: read so that the store type
    /// is what `check` names as unsupported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxsize: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<serde_json::Value>,
}

impl Default for CookieStoreConfig {
    fn default() -> Self {
        CookieStoreConfig {
            kind: cookie_store_memory(),
            filename: cookie_filename(),
            purge_on_startup: false,
            path: None,
            maxsize: None,
            readonly: None,
            sync: None,
        }
    }
}

fn cookie_name() -> String {
    "cbtid".into()
}
fn cookie_length() -> usize {
    24
}
fn cookie_max_age() -> u64 {
    604_800
}
fn cookie_same_site() -> String {
    "lax".into()
}
fn cookie_max_cookies() -> usize {
    100_000
}
fn cookie_store_memory() -> String {
    "memory".into()
}
fn cookie_filename() -> String {
    "cookies.dat".into()
}

/// Crossbar.io's cookie settings, checked as it checks them, and Trellis's.
pub(super) fn validate_cookie(pre: &str, t: &TransportConfig, c: &CookieConfig, p: Report<'_>) {
    if t.kind != TransportKind::Websocket {
        p(
            pre.to_owned(),
            "cookie tracking is for WebSocket transports and paths (browsers send cookies with the WebSocket upgrade)".into(),
        );
    }
    let name_ok = c.name.len() >= 2
        && c.name.starts_with(|ch: char| ch.is_ascii_lowercase())
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if !name_ok {
        p(
            format!("{pre}.name"),
            format!(
                "{:?}: a cookie name is lower-case letters, digits and _, starting with a letter (^[a-z][a-z0-9_]+$)",
                c.name
            ),
        );
    }
    if !(12..=64).contains(&c.length) {
        p(
            format!("{pre}.length"),
            "must be between 12 and 64 characters".into(),
        );
    }
    if c.max_age == 0 || c.max_age > 86_400 * 360 * 10 {
        p(
            format!("{pre}.max_age"),
            "must be more than 0 seconds and at most 10 years".into(),
        );
    }
    if c.max_cookies == 0 {
        p(format!("{pre}.max_cookies"), "must be at least 1".into());
    }
    match c.same_site.as_str() {
        "strict" | "lax" => {}
        "none" if c.secure != Some(false) && (c.secure == Some(true) || t.endpoint.tls.is_some()) => {}
        "none" => p(
            format!("{pre}.same_site"),
            "\"none\" needs a Secure cookie (browsers refuse it otherwise): TLS on the endpoint, or \"secure\": true".into(),
        ),
        other => p(
            format!("{pre}.same_site"),
            format!("{other:?}: expected \"strict\", \"lax\" or \"none\""),
        ),
    }
    match c.store.kind.as_str() {
        "memory" | "file" => {}
        "database" => p(
            format!("{pre}.store.type"),
            "Crossbar.io's LMDB cookie database is not supported by Trellis: use \"file\" (logins kept across restarts) or \"memory\"".into(),
        ),
        other => p(
            format!("{pre}.store.type"),
            format!("{other:?}: expected \"memory\" or \"file\""),
        ),
    }
    if c.store.kind == "file" && c.store.filename.trim().is_empty() {
        p(format!("{pre}.store.filename"), "must not be empty".into());
    }
}

/// A static TLS client-certificate principal (Crossbar.io's shape): the
/// authid is its key in `principals`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsPrincipal {
    /// The certificate's SHA-1 fingerprint, hex (colons and case as you
    /// like: `B6:E5:E6:...`).
    #[serde(rename = "certificate-sha1")]
    pub certificate_sha1: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

/// A fingerprint as `AB:CD:...` (upper case, colons), whatever way it was
/// written; `None` when it is not hex.
pub fn normalized_fingerprint(f: &str) -> Option<String> {
    let hex: String = f.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex).ok()?;
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// A static WAMP-SCRAM principal, in Crossbar.io's shape (what `trellis
/// scram-credential` and autobahn's `derive_scram_credential` print).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScramPrincipal {
    /// `argon2id-13` or `pbkdf2`.
    pub kdf: String,
    /// The KDF's iterations (time cost).
    pub iterations: u32,
    /// Argon2's memory in KiB (argon2id-13 only).
    #[serde(default)]
    pub memory: Option<u32>,
    /// The salt, hex.
    pub salt: String,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`, hex.
    #[serde(rename = "stored-key")]
    pub stored_key: String,
    /// `HMAC(SaltedPassword, "Server Key")`, hex.
    #[serde(rename = "server-key")]
    pub server_key: String,
    /// The role the principal gets.
    pub role: String,
    /// The realm the principal may join; any realm when absent.
    #[serde(default)]
    pub realm: Option<String>,
}

impl ScramPrincipal {
    /// The credential, checked: every problem as (key, message).
    pub fn credential(&self) -> Result<proto::scram::Credential, Vec<(&'static str, String)>> {
        scram_credential(
            &self.kdf,
            self.iterations,
            self.memory,
            &self.salt,
            &self.stored_key,
            &self.server_key,
        )
    }
}

/// A SCRAM credential from its config (or authenticator) fields: every
/// problem as (key, message).
pub fn scram_credential(
    kdf: &str,
    iterations: u32,
    memory: Option<u32>,
    salt: &str,
    stored_key: &str,
    server_key: &str,
) -> Result<proto::scram::Credential, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let kdf = proto::scram::Kdf::parse(kdf, iterations, memory)
        .map_err(|e| problems.push(("kdf", e)))
        .ok();
    if kdf.is_some_and(|k| k.memory().is_none()) && memory.is_some() {
        problems.push(("memory", "only argon2id-13 takes \"memory\"".into()));
    }
    let salt = match hex::decode(salt) {
        Ok(s) if s.len() >= 8 => Some(s),
        _ => {
            problems.push((
                "salt",
                "expected at least 8 bytes in hex (16 or more hex characters)".into(),
            ));
            None
        }
    };
    let mut key = |name: &'static str, text: &str| -> Option<[u8; 32]> {
        let k = hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        if k.is_none() {
            problems.push((name, "expected 32 bytes in hex (64 characters)".into()));
        }
        k
    };
    let stored = key("stored-key", stored_key);
    let server = key("server-key", server_key);
    match (kdf, salt, stored, server) {
        (Some(kdf), Some(salt), Some(stored_key), Some(server_key)) if problems.is_empty() => {
            Ok(proto::scram::Credential {
                kdf,
                salt,
                stored_key,
                server_key,
            })
        }
        _ => Err(problems),
    }
}

/// The password part of a URL's user info (`scheme://user:PASSWORD@host`),
/// if it has one.
pub(super) fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, pw)| pw)
}

/// A Redis URL as the Redis client takes it: `redis://` or `rediss://`
/// with a host and an optional database number, or `unix://` /
/// `redis+unix://` with a socket path.
pub(super) fn check_redis_url(url: &str) -> Result<(), String> {
    let expected = "expected redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... for TLS, or unix:///PATH/TO/SOCKET";
    let u =
        url::Url::parse(url).map_err(|e| format!("invalid Redis URL {url:?} ({e}): {expected}"))?;
    match u.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err(format!("the Redis URL {url:?} has no host: {expected}"));
            }
            let db = u.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err(format!(
                    "the Redis URL {url:?} names database {db:?}: after the host comes a database number (/0)"
                ));
            }
            Ok(())
        }
        "unix" | "redis+unix" | "valkey+unix" => {
            if u.path().is_empty() || u.path() == "/" {
                return Err(format!(
                    "the Redis URL {url:?} has no socket path: {expected}"
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "the Redis URL {url:?} has the scheme {other:?}: {expected}"
        )),
    }
}

/// Replace `value` by the variable it names, if it names one.
fn resolve_secret(
    value: &mut String,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<ConfigProblem>,
) {
    let Some(name) = env_placeholder(value) else {
        return;
    };
    match env(name) {
        Some(v) if blank(&v) => out.push(ConfigProblem {
            message: format!(
                "names the environment variable {name}, which is set but empty: an empty secret would let anyone log in with an empty one; give {name} a value (check the node's EnvironmentFile or compose file) or remove this principal"
            ),
            path,
        }),
        Some(v) => *value = v,
        None => out.push(ConfigProblem {
            message: format!(
                "names the environment variable {name}, which is not set: set it for the node (e.g. Environment= in its systemd unit) or write the value here"
            ),
            path,
        }),
    }
}

impl AuthConfig {
    /// Secrets given as `${VAR}` / `$VAR`: tickets, WAMP-CRA secrets,
    /// cryptosign keys, SCRAM keys, resolved from `env`.
    fn resolve_env(
        &mut self,
        pre: &str,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut Vec<ConfigProblem>,
    ) {
        if let Some(m) = &mut self.ticket {
            for (id, p) in &mut m.principals {
                resolve_secret(
                    &mut p.ticket,
                    format!("{pre}.ticket.principals.{id}.ticket"),
                    env,
                    out,
                );
            }
        }
        if let Some(m) = &mut self.wampcra {
            for (id, u) in &mut m.principals {
                resolve_secret(
                    &mut u.secret,
                    format!("{pre}.wampcra.users.{id}.secret"),
                    env,
                    out,
                );
            }
        }
        if let Some(m) = &mut self.scram {
            for (id, pr) in &mut m.principals {
                for (key, value) in [
                    ("stored-key", &mut pr.stored_key),
                    ("server-key", &mut pr.server_key),
                ] {
                    resolve_secret(
                        value,
                        format!("{pre}.scram.principals.{id}.{key}"),
                        env,
                        out,
                    );
                }
            }
        }
        if let Some(t) = &mut self.token
            && let Some(url) = &mut t.store.url
        {
            resolve_secret(url, format!("{pre}.token.store.url"), env, out);
        }
        if let Some(m) = &mut self.cryptosign {
            for (id, p) in &mut m.principals {
                for (k, key) in p.authorized_keys.iter_mut().enumerate() {
                    resolve_secret(
                        key,
                        format!("{pre}.cryptosign.principals.{id}.authorized_keys[{k}]"),
                        env,
                        out,
                    );
                }
            }
        }
    }
}

impl RouterConfig {
    /// Resolve the secrets that name environment variables (`${VAR}` or
    /// `$VAR`) in every transport's and web path's `auth`; every unset
    /// variable is a problem naming the key and the variable.
    pub fn resolve_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, t) in self.transports.iter_mut().enumerate() {
            if let Some(a) = &mut t.auth {
                a.resolve_env(&format!("transports[{i}].auth"), env, &mut out);
            }
            for (name, path) in t.paths.iter_mut().flatten() {
                if let Some(a) = &mut path.auth {
                    a.resolve_env(&format!("transports[{i}].paths.{name}.auth"), env, &mut out);
                }
            }
        }
        out
    }
}

impl RouterConfig {
    pub(super) fn role_exists(&self, realm: Option<&str>, role: &str) -> bool {
        role == "trusted"
            || self
                .realms
                .iter()
                .filter(|r| realm.is_none_or(|n| n == r.name))
                .any(|r| r.roles.iter().any(|x| x.name == role))
    }

    pub(super) fn validate_auth(
        &self,
        pre: &str,
        t: &TransportConfig,
        p: &mut dyn FnMut(String, String),
    ) {
        let base = format!("{pre}.auth");
        let Some(auth) = &t.auth else {
            return;
        };
        let verifies_clients = t
            .endpoint
            .tls
            .as_ref()
            .and_then(|x| x.ca_certificates.as_ref())
            .is_some_and(|c| !c.is_empty());
        if auth.cookie.is_some() && t.cookie.is_none() {
            p(
                format!("{base}.cookie"),
                "cookie authentication needs cookie tracking on this WebSocket transport or path: add \"cookie\": {\"store\": {\"type\": \"file\"}} (or memory) beside \"auth\"".into(),
            );
        }
        if auth.tls.is_some() && !verifies_clients {
            p(
                format!("{base}.tls"),
                "TLS client-certificate authentication needs the transport's endpoint.tls with ca_certificates (the CAs client certificates are verified against)".into(),
            );
        }
        if let Some(t) = &auth.token {
            if t.max_age == 0 || t.max_age > 86_400 {
                p(
                    format!("{base}.token.max-age"),
                    "must be between 1 and 86400 seconds".into(),
                );
            }
            if t.query_param.is_empty() {
                p(
                    format!("{base}.token.query-param"),
                    "must not be empty".into(),
                );
            }
            if let Some(role) = &t.role
                && !self.role_exists(None, role)
            {
                p(
                    format!("{base}.token.role"),
                    format!("role {role:?} is not defined in any realm"),
                );
            }
            if t.store.kind == TokenStoreKind::Embedded
                && (t.store.url.is_some() || t.store.database.is_some() || t.store.prefix.is_some())
            {
                p(
                    format!("{base}.token.store"),
                    "url, database and prefix belong to \"type\": \"redis\"".into(),
                );
            }
            if let Some(url) = &t.store.url
                && let Err(e) = check_redis_url(url)
            {
                p(format!("{base}.token.store.url"), e);
            }
            if let Some(url) = &t.store.url
                && url_password(url).is_some_and(blank)
            {
                p(
                    format!("{base}.token.store.url"),
                    "the URL's password is empty: give the Redis password (redis://:PASSWORD@host:port), or leave out the user part for a Redis without one".into(),
                );
            }
        }
        if let Some(pc) = &auth.peercred {
            if t.endpoint.kind != EndpointKind::Unix {
                p(
                    format!("{base}.peercred"),
                    "peer credentials exist only on unix endpoints: use \"endpoint\": {\"type\": \"unix\", ...}".into(),
                );
            }
            if pc.kind != "static" {
                p(
                    format!("{base}.peercred.type"),
                    format!(
                        "peer-credential authentication is \"static\", found {:?}",
                        pc.kind
                    ),
                );
            }
            if pc.principals.is_empty() {
                p(
                    format!("{base}.peercred.principals"),
                    "list at least one user (name or uid)".into(),
                );
            }
            for (user, pr) in &pc.principals {
                self.check_principal(
                    &format!("{base}.peercred.principals.{user}"),
                    &pr.role,
                    pr.realm.as_deref(),
                    p,
                );
            }
        }
        if auth.anonymous.is_none()
            && auth.ticket.is_none()
            && auth.wampcra.is_none()
            && auth.cryptosign.is_none()
            && auth.scram.is_none()
            && auth.tls.is_none()
            && auth.cookie.is_none()
            && auth.token.is_none()
            && auth.peercred.is_none()
        {
            p(
                base.clone(),
                "no authentication method is configured: add anonymous, ticket, wampcra, cryptosign, scram, tls or cookie, or leave \"auth\" out".into(),
            );
        }
        if let Some(an) = &auth.anonymous {
            self.validate_method(
                &format!("{base}.anonymous"),
                &an.as_method(),
                p,
                &mut |_, (), _| {},
            );
            if an.kind != AuthKind::Static && an.authid.is_some() {
                p(
                    format!("{base}.anonymous.authid"),
                    "a dynamic anonymous login takes its authid from the authenticator's answer (or a random one): remove authid or use \"type\": \"static\"".into(),
                );
            }
            if let Some(r) = &an.realm
                && !self.realms.iter().any(|x| &x.name == r)
            {
                p(
                    format!("{base}.anonymous.realm"),
                    format!("realm {r:?} is not defined in this router"),
                );
            }
        }
        if let Some(m) = &auth.ticket {
            self.validate_method(&format!("{base}.ticket"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                blank_secret(format!("{path}.ticket"), &pr.ticket, p);
            });
        }
        if let Some(m) = &auth.wampcra {
            self.validate_method(&format!("{base}.wampcra"), m, p, &mut |path, u, p| {
                self.check_principal(path, &u.role, u.realm.as_deref(), p);
                blank_secret(format!("{path}.secret"), &u.secret, p);
                if let Some(salt) = &u.salt {
                    blank_secret(format!("{path}.salt"), salt, p);
                }
                if u.salt.is_none() && (u.iterations.is_some() || u.keylen.is_some()) {
                    p(format!("{path}.salt"), "iterations and keylen need a salt".into());
                }
                if u.salt.is_none() && u.secret_kind == SecretKind::DerivedKey {
                    p(
                        format!("{path}.secret-kind"),
                        "\"derived-key\" needs the salt (and iterations, keylen) the key was derived with".into(),
                    );
                }
                if u.iterations.is_some_and(|n| n == 0 || n > proto::auth::MAX_ITERATIONS) {
                    p(
                        format!("{path}.iterations"),
                        format!("must be between 1 and {}", proto::auth::MAX_ITERATIONS),
                    );
                }
                if u.keylen.is_some_and(|n| n == 0 || n > 1024) {
                    p(format!("{path}.keylen"), "must be between 1 and 1024 bytes".into());
                }
                if u.extra.as_ref().is_some_and(|e| !e.is_object()) {
                    p(
                        format!("{path}.extra"),
                        "must be a JSON object (it becomes WELCOME's authextra)".into(),
                    );
                }
                if u.authid.as_deref() == Some("") {
                    p(format!("{path}.authid"), "must not be empty".into());
                }
            });
        }
        if let Some(m) = &auth.tls {
            self.validate_method(&format!("{base}.tls"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if normalized_fingerprint(&pr.certificate_sha1).is_none_or(|f| f.len() != 59) {
                    p(
                        format!("{path}.certificate-sha1"),
                        "expected the certificate's SHA-1 fingerprint: 20 bytes in hex, colons allowed (`openssl x509 -noout -fingerprint -sha1 -in client.crt`)".into(),
                    );
                }
            });
        }
        if let Some(m) = &auth.scram {
            self.validate_method(&format!("{base}.scram"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if let Err(problems) = pr.credential() {
                    for (key, message) in problems {
                        p(format!("{path}.{key}"), message);
                    }
                }
            });
        }
        if let Some(m) = &auth.cryptosign {
            self.validate_method(&format!("{base}.cryptosign"), m, p, &mut |path, pr, p| {
                self.check_principal(path, &pr.role, pr.realm.as_deref(), p);
                if pr.authorized_keys.is_empty() {
                    p(
                        format!("{path}.authorized_keys"),
                        "list at least one public key".into(),
                    );
                }
                for (k, key) in pr.authorized_keys.iter().enumerate() {
                    if proto::auth::parse_pubkey(key).is_err() {
                        p(
                            format!("{path}.authorized_keys[{k}]"),
                            "not an Ed25519 public key: expected 64 hex characters".into(),
                        );
                    }
                }
            });
        }
    }

    /// Anonymous sessions may join any realm, so the role must exist in all.
    /// Realms a transport's anonymous sessions cannot join, because their
    /// role is not defined there: joining is refused at HELLO, as
    /// Crossbar.io does, and `check` warns.
    pub(super) fn anonymous_role_warnings(
        &self,
        path: &str,
        t: &TransportConfig,
        out: &mut Vec<ConfigProblem>,
    ) {
        let Some(role) = t.anonymous_role() else {
            return;
        };
        if role == "trusted" {
            return;
        }
        let only = t
            .auth
            .as_ref()
            .and_then(|a| a.anonymous.as_ref())
            .and_then(|a| a.realm.as_deref());
        for (r, realm) in self.realms.iter().enumerate() {
            if only.is_none_or(|o| o == realm.name) && !realm.roles.iter().any(|x| x.name == role) {
                out.push(ConfigProblem {
                    path: path.to_owned(),
                    message: format!(
                        "anonymous sessions get role {role:?}, which realm {:?} does not define (realms[{r}].roles): they cannot join that realm; add the role there if they should",
                        realm.name
                    ),
                });
            }
        }
    }

    fn check_principal(
        &self,
        path: &str,
        role: &str,
        realm: Option<&str>,
        p: &mut dyn FnMut(String, String),
    ) {
        if let Some(r) = realm
            && !self.realms.iter().any(|x| x.name == r)
        {
            p(
                format!("{path}.realm"),
                format!("realm {r:?} is not defined in this router"),
            );
        } else if !self.role_exists(realm, role) {
            let scope = realm.map_or("any realm".to_owned(), |r| format!("realm {r:?}"));
            p(
                format!("{path}.role"),
                format!("role {role:?} is not defined in {scope}"),
            );
        }
    }

    fn validate_method<P>(
        &self,
        path: &str,
        m: &MethodAuth<P>,
        p: &mut dyn FnMut(String, String),
        each: &mut dyn FnMut(&str, &P, Report<'_>),
    ) {
        if m.trustroots.is_some() {
            p(
                format!("{path}.trustroots"),
                "Crossbar.io's cryptosign \"trustroots\" (clients vouched for by a chain of certificates to a trusted root) is not supported by Trellis yet: list each client's public key under \"principals\" (authorized_keys), or use a dynamic authenticator".into(),
            );
        }
        if m.kind != AuthKind::Function
            && (m.create.is_some() || m.config.is_some() || m.expose_controller.is_some())
        {
            p(
                format!("{path}.create"),
                "only \"type\": \"function\" takes create, config and expose_controller".into(),
            );
        }
        match m.kind {
            AuthKind::Function => {
                match m.create.as_deref() {
                    None => p(
                        format!("{path}.create"),
                        "a function method names the Python function that creates its authenticator, e.g. \"authenticator.create_authenticator\"".into(),
                    ),
                    Some(c) if !c.contains('.') || c.starts_with('.') || c.ends_with('.') => p(
                        format!("{path}.create"),
                        format!("{c:?}: a function is named as module.function"),
                    ),
                    Some(_) => {}
                }
                if m.authenticator.is_some() || m.authenticator_realm.is_some() {
                    p(
                        format!("{path}.authenticator"),
                        "a function method has no authenticator procedure: it is the function named by \"create\"".into(),
                    );
                }
                if !m.principals.is_empty() {
                    p(
                        format!("{path}.principals"),
                        "a function method has no static principals: remove them or use \"type\": \"static\"".into(),
                    );
                }
            }
            AuthKind::Static => {
                if m.authenticator.is_some() || m.authenticator_realm.is_some() {
                    p(
                        format!("{path}.authenticator"),
                        "a static method lists principals; use \"type\": \"dynamic\" for an authenticator".into(),
                    );
                }
                for (authid, pr) in &m.principals {
                    each(&format!("{path}.principals.{authid}"), pr, p);
                }
            }
            AuthKind::Dynamic => {
                match &m.authenticator {
                    None => p(
                        format!("{path}.authenticator"),
                        "a dynamic method needs the URI of its authenticator procedure".into(),
                    ),
                    Some(a) => {
                        if let Err(e) = proto::uri::validate(a, MatchPolicy::Exact, false) {
                            p(
                                format!("{path}.authenticator"),
                                format!("not a valid procedure URI: {e}"),
                            );
                        }
                    }
                }
                if let Some(r) = &m.authenticator_realm
                    && !self.realms.iter().any(|x| &x.name == r)
                {
                    p(
                        format!("{path}.authenticator-realm"),
                        format!("realm {r:?} is not defined in this router"),
                    );
                }
                if !m.principals.is_empty() {
                    p(
                        format!("{path}.principals"),
                        "a dynamic method has no static principals: remove them or use \"type\": \"static\"".into(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_however_they_are_written() {
        let want = "B6:E5:E6:01";
        assert_eq!(normalized_fingerprint("b6e5e601").as_deref(), Some(want));
        assert_eq!(normalized_fingerprint("B6:e5:E6:01").as_deref(), Some(want));
        assert_eq!(normalized_fingerprint("b6:e5:zz:01"), None);
        assert_eq!(normalized_fingerprint("b6e5e"), None, "odd length");
    }

    #[test]
    fn a_scram_credential_names_each_field_that_is_wrong() {
        let key = "ab".repeat(32);
        let ok = scram_credential(
            "argon2id-13",
            4096,
            Some(512),
            "0011223344556677",
            &key,
            &key,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let bad = scram_credential("pbkdf2", 1000, Some(512), "0011", "zz", &key)
            .expect_err("three problems");
        let keys: Vec<&str> = bad.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["memory", "salt", "stored-key"]);
        assert!(bad[1].1.contains("at least 8 bytes"), "{bad:?}");
        let kdf = scram_credential("md5", 1, None, "0011223344556677", &key, &key)
            .expect_err("unknown kdf");
        assert_eq!(kdf[0].0, "kdf");
    }
}
