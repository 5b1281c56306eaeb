//! Authentication: who a session is, decided during the opening handshake.
//!
//! [`AuthSettings`] is one transport's `auth` config, resolved into one
//! value per enabled method. Each method is a type in its own file that
//! implements [`Method`] (what HELLO leads to) and, if it challenges, a
//! pending type that implements [`Challenged`] (what AUTHENTICATE leads to):
//! [`anonymous`], [`ticket`], [`wampcra`], [`cryptosign`], [`token`],
//! [`peercred`], [`scram`], [`tls`]. Static and dynamic flavours live in the method's file;
//! dynamic ones call an authenticator procedure through
//! [`authenticator::Authenticator`]. Failed attempts are counted per peer
//! address by the [`limiter`].
//!
//! The session task calls [`AuthSettings::hello`] with the client's HELLO:
//! the answer is a principal at once, or a CHALLENGE to send and a
//! [`PendingAuth`] that [`AuthSettings::authenticate`] finishes with the
//! client's AUTHENTICATE.
//!
//! Every refusal carries a WAMP URI and a message that names the method, the
//! authenticator and the cause; secrets and tickets never appear in either,
//! nor in the log.
//!
//! To add a method: a file with its config-resolved type implementing
//! [`Method`] (and its pending type implementing [`Challenged`]), a variant
//! in [`AnyMethod`] (and [`PendingAuth`]), and its construction in
//! [`AuthSettings::from_config`].

pub mod anonymous;
pub mod authenticator;
pub mod cookie;
pub mod cryptosign;
pub mod limiter;
pub mod peercred;
pub mod scram;
#[cfg(test)]
mod tests;
pub mod ticket;
pub mod tls;
pub mod token;
pub mod wampcra;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::errors::uri as wamp_uri;
use proto::message::{Authenticate, Challenge};
use proto::{Dict, Id, Value};
use tracing::warn;

use crate::realms::Realms;
use crate::tokens::TokenStore;
use trellis_config::router::TransportConfig;

pub use self::limiter::{FailureLimiter, Gate};
pub use self::token::TokenSettings;
use self::{
    anonymous::Anonymous, authenticator::Resolved, cookie::CookieMethod, cryptosign::Cryptosign,
    peercred::PeerCred, scram::Scram, ticket::Ticket, tls::TlsLogin, token::TokenLogin,
    wampcra::WampCra,
};

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

/// A refusal that is not the client's fault: it does not count.
pub(crate) fn refuse(reason: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason: reason.to_owned(),
        message: message.into(),
        counts: false,
    }
}

/// A refusal of the client's credentials: it counts against its limit.
pub(crate) fn deny(reason: &str, message: impl Into<String>) -> Refusal {
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

/// What HELLO leads to.
#[derive(Debug)]
pub enum Outcome {
    /// Authenticated already (anonymous).
    Welcome(Principal),
    /// Send this CHALLENGE, then finish with AUTHENTICATE.
    Challenge(Challenge, PendingAuth),
}

/// A handshake waiting for AUTHENTICATE: the challenging method's state.
#[derive(Debug)]
pub enum PendingAuth {
    Ticket(ticket::PendingTicket),
    Cra(wampcra::PendingCra),
    Cryptosign(cryptosign::PendingCryptosign),
    Scram(scram::PendingScram),
    Token(token::PendingToken),
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
    /// A private link of the router worker: may join internal realms.
    pub internal: bool,
    /// Where the transport counts authenticators' answer times, when it
    /// counts them.
    pub latency: Option<&'a crate::realm::AtomicHistogram>,
    /// Cookie tracking: who the connection's cookie logged in as before.
    pub cookie: Option<crate::cookies::CookieLogin>,
}

impl Context<'_> {
    /// The `details` argument of a dynamic authenticator call, as
    /// Crossbar.io passes it.
    pub(crate) fn details(&self, authmethod: &str, authid: Value, authextra: Dict) -> Dict {
        proto::dict! {
            "session" => self.session,
            "authmethod" => authmethod,
            "authid" => authid,
            "authextra" => authextra,
            "transport" => self.transport.clone(),
        }
    }
}

/// The authentication part of a HELLO, checked.
#[derive(Debug)]
pub struct Hello<'a> {
    /// The realm asked for (empty when HELLO's was null).
    pub realm: &'a str,
    /// `authmethods`, in the client's order (`anonymous` when absent).
    pub offered: Vec<String>,
    /// The claimed `authid`.
    pub authid: Option<String>,
    /// `authextra`.
    pub authextra: Dict,
}

impl<'a> Hello<'a> {
    /// Read `authmethods`, `authid` and `authextra` from HELLO.Details.
    ///
    /// # Errors
    /// A protocol violation naming the field and its expected shape.
    pub fn parse(hello: &'a proto::message::Hello) -> Result<Hello<'a>, Refusal> {
        let d = &hello.details;
        let offered = match d.get("authmethods") {
            None | Some(Value::Null) => vec!["anonymous".into()],
            Some(Value::List(l)) => l
                .iter()
                .map(|m| {
                    m.as_str().map(str::to_owned).ok_or_else(|| {
                        refuse(
                            wamp_uri::PROTOCOL_VIOLATION,
                            format!(
                                "HELLO.Details.authmethods must be a list of strings, found a {}",
                                m.type_name()
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
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
        let authid = match d.get("authid") {
            None | Some(Value::Null) => None,
            Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(refuse(
                    wamp_uri::PROTOCOL_VIOLATION,
                    "HELLO.Details.authid must be a non-empty string",
                ));
            }
        };
        let authextra = match d.get("authextra") {
            None | Some(Value::Null) => Dict::new(),
            Some(Value::Dict(x)) => x.clone(),
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
        Ok(Hello {
            realm: &hello.realm,
            offered,
            authid,
            authextra,
        })
    }
}

/// One authentication method, resolved from a transport's config.
pub(crate) trait Method {
    /// Its name in HELLO.Details.authmethods.
    fn name(&self) -> &'static str;
    /// Welcome, challenge or refuse the HELLO.
    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal>;
}

/// A handshake that sent a CHALLENGE and waits for AUTHENTICATE.
pub(crate) trait Challenged {
    /// Check the client's answer (`AUTHENTICATE.Signature`).
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal>;
}

/// The methods a transport may enable, for dispatch without boxing.
#[derive(Debug)]
pub enum AnyMethod {
    Anonymous(Anonymous),
    Ticket(Ticket),
    WampCra(WampCra),
    Cryptosign(Cryptosign),
    Scram(Scram),
    Tls(TlsLogin),
    Cookie(CookieMethod),
    PeerCred(PeerCred),
    Token(TokenLogin),
}

impl AnyMethod {
    fn name(&self) -> &'static str {
        match self {
            AnyMethod::Anonymous(m) => m.name(),
            AnyMethod::Ticket(m) => m.name(),
            AnyMethod::WampCra(m) => m.name(),
            AnyMethod::Cryptosign(m) => m.name(),
            AnyMethod::Scram(m) => m.name(),
            AnyMethod::Tls(m) => m.name(),
            AnyMethod::Cookie(m) => m.name(),
            AnyMethod::PeerCred(m) => m.name(),
            AnyMethod::Token(m) => m.name(),
        }
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        match self {
            AnyMethod::Anonymous(m) => m.hello(hello, ctx).await,
            AnyMethod::Ticket(m) => m.hello(hello, ctx).await,
            AnyMethod::WampCra(m) => m.hello(hello, ctx).await,
            AnyMethod::Cryptosign(m) => m.hello(hello, ctx).await,
            AnyMethod::Scram(m) => m.hello(hello, ctx).await,
            AnyMethod::Tls(m) => m.hello(hello, ctx).await,
            AnyMethod::Cookie(m) => m.hello(hello, ctx).await,
            AnyMethod::PeerCred(m) => m.hello(hello, ctx).await,
            AnyMethod::Token(m) => m.hello(hello, ctx).await,
        }
    }
}

/// One transport's authentication config, resolved.
#[derive(Debug)]
pub struct AuthSettings {
    /// The enabled methods, in the order they are listed to clients.
    methods: Vec<AnyMethod>,
    /// One-time tokens, when configured (also accepted in the URL).
    token: Option<Arc<TokenSettings>>,
    /// Deadline for AUTHENTICATE after CHALLENGE.
    pub authenticate_timeout: Duration,
    /// Failed attempts per peer address.
    pub limiter: FailureLimiter,
    /// A private link of the router worker: may join internal realms.
    pub internal: bool,
}

impl AuthSettings {
    /// Resolve a transport's `auth` and limits.
    pub fn from_config(t: &TransportConfig, token_store: Option<Arc<TokenStore>>) -> AuthSettings {
        let o = &t.options;
        let timeout = Duration::from_millis(o.authenticator_timeout);
        let mut methods = Vec::new();
        let anonymous = t.auth.as_ref().and_then(|a| a.anonymous.as_ref());
        if let Some(role) = t.anonymous_role() {
            methods.push(AnyMethod::Anonymous(Anonymous {
                role: role.to_owned(),
                authid: anonymous.and_then(|a| a.authid.clone()),
                realm: anonymous.and_then(|a| a.realm.clone()),
                any_method: anonymous.is_some_and(|a| a.any_method),
                authenticator: None,
            }));
        } else if let Some(a) = anonymous {
            // Dynamic (a function one is dynamic by now).
            methods.push(AnyMethod::Anonymous(Anonymous {
                role: a.role.clone(),
                authid: None,
                realm: a.realm.clone(),
                any_method: false,
                authenticator: Resolved::new(a.as_method(), timeout).authenticator,
            }));
        }
        let auth = t.auth.as_ref();
        if let Some(m) = auth.and_then(|a| a.ticket.clone()) {
            methods.push(AnyMethod::Ticket(Ticket(Resolved::new(m, timeout))));
        }
        if let Some(m) = auth.and_then(|a| a.wampcra.clone()) {
            methods.push(AnyMethod::WampCra(WampCra(Resolved::new(m, timeout))));
        }
        if let Some(m) = auth.and_then(|a| a.cryptosign.clone()) {
            methods.push(AnyMethod::Cryptosign(Cryptosign(Resolved::new(m, timeout))));
        }
        if let Some(m) = auth.and_then(|a| a.scram.clone()) {
            methods.push(AnyMethod::Scram(Scram(Resolved::new(m, timeout))));
        }
        if let Some(m) = auth.and_then(|a| a.tls.clone()) {
            methods.push(AnyMethod::Tls(TlsLogin(Resolved::new(m, timeout))));
        }
        if auth.is_some_and(|a| a.cookie.is_some()) {
            methods.push(AnyMethod::Cookie(CookieMethod));
        }
        if let Some(pc) = auth.and_then(|a| a.peercred.clone()) {
            methods.push(AnyMethod::PeerCred(PeerCred(pc)));
        }
        let token = match (auth.and_then(|a| a.token.as_ref()), token_store) {
            (Some(cfg), Some(store)) => Some(Arc::new(TokenSettings {
                store,
                max_age: Duration::from_secs(cfg.max_age),
                query_param: cfg.query_param.clone(),
                role: cfg.role.clone(),
            })),
            _ => None,
        };
        if let Some(ts) = &token {
            methods.push(AnyMethod::Token(TokenLogin(ts.clone())));
        }
        AuthSettings {
            methods,
            token,
            authenticate_timeout: Duration::from_millis(o.authenticate_timeout),
            limiter: FailureLimiter::new(
                o.max_auth_failures,
                Duration::from_millis(o.auth_failure_window),
                Duration::from_millis(o.auth_failure_delay),
            ),
            internal: t.internal,
        }
    }

    /// The method a client's `authmethods` entry selects. A client may
    /// present its token as a WAMP ticket when ticket itself is off.
    fn method(&self, name: &str) -> Option<&AnyMethod> {
        self.methods.iter().find(|m| m.name() == name).or_else(|| {
            (name == "ticket")
                .then(|| self.methods.iter().find(|m| m.name() == "token"))
                .flatten()
        })
    }

    /// The methods enabled on this transport, in a fixed order.
    fn enabled(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.methods.iter().map(AnyMethod::name).collect();
        if v.contains(&"token") && !v.contains(&"ticket") {
            v.push("ticket");
        }
        v
    }

    /// Decide what to do with HELLO: welcome, challenge, or refuse.
    ///
    /// # Errors
    /// A [`Refusal`] with the ABORT reason and message.
    pub async fn hello(
        &self,
        hello: &proto::message::Hello,
        ctx: &Context<'_>,
    ) -> Result<Outcome, Refusal> {
        let hello = Hello::parse(hello)?;
        // A token in the URL logs the session in, whatever it offered.
        if let Some(ts) = &self.token
            && let Some(Value::Str(uri)) = ctx.transport.get("http_request_uri")
            && let Some(token) = crate::tokens::query_param(uri, &ts.query_param)
        {
            return ts
                .consume(ctx, &token, hello.realm)
                .await
                .map(Outcome::Welcome);
        }
        // A router component's private link: it joins with the role the
        // config gives it, whatever it offers (as under Crossbar.io).
        if let Some(AnyMethod::Anonymous(a)) = self.methods.first()
            && a.any_method
        {
            return a.hello(&hello, ctx).await;
        }
        for m in &self.methods {
            if let AnyMethod::PeerCred(pc) = m
                && let Some(answer) = pc.before_methods(&hello, ctx)
            {
                return answer;
            }
        }
        // The client's order decides. A cookie that cannot log in (none
        // yet, logged out, revoked) gives way to the next method offered,
        // as in Crossbar.io: the browser logs in afresh.
        let mut cookie_refusal = None;
        for m in hello.offered.iter().filter_map(|m| self.method(m)) {
            if let AnyMethod::Cookie(_) = m {
                match cookie::welcome(&self.methods, &hello, ctx) {
                    Ok(p) => return Ok(Outcome::Welcome(p)),
                    Err(r) => {
                        cookie_refusal = Some(r);
                        continue;
                    }
                }
            }
            return m.hello(&hello, ctx).await;
        }
        if let Some(r) = cookie_refusal {
            return Err(r);
        }
        Err(deny(
            wamp_uri::NO_AUTH_METHOD,
            format!(
                "none of the offered authmethods ({}) is enabled on this transport; it accepts: {}",
                hello.offered.join(", "),
                self.enabled().join(", ")
            ),
        ))
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
        let signature = a.signature.as_str();
        match pending {
            PendingAuth::Ticket(p) => p.authenticate(signature, ctx).await,
            PendingAuth::Cra(p) => p.authenticate(signature, ctx).await,
            PendingAuth::Cryptosign(p) => p.authenticate(signature, ctx).await,
            PendingAuth::Scram(p) => p.authenticate(signature, ctx).await,
            PendingAuth::Token(p) => p.authenticate(signature, ctx).await,
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
            let max = self.limiter.max() as usize;
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

/// Check the realm and the role a method (or its authenticator) assigned:
/// both must exist. `source` names who assigned them, for the message.
pub(crate) fn admit(
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
    // The router's own realms (its function authenticators') exist only
    // for its private links, whatever an authenticator assigned.
    let hidden = principal
        .realm
        .starts_with(trellis_config::router::INTERNAL_REALM_PREFIX)
        && !ctx.internal;
    let Some(realm) = ctx.realms.get(&principal.realm).filter(|_| !hidden) else {
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
