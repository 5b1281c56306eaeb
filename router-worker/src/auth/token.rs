//! One-time login tokens: minted by `trellis.token.issue`, presented in the
//! WebSocket URL's query or as a WAMP ticket, valid once.

use std::sync::Arc;
use std::time::Duration;

use proto::Dict;
use proto::errors::uri as wamp_uri;
use proto::message::Challenge;
use tracing::warn;

use super::{
    Challenged, Context, Hello, Method, Outcome, PendingAuth, Principal, Refusal, admit, deny,
    refuse,
};
use crate::tokens::{Consumed, TokenStore};

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

/// A ticket CHALLENGE sent to a client that presents its token as the
/// ticket.
#[derive(Debug)]
pub struct PendingToken {
    settings: Arc<TokenSettings>,
    hello_realm: String,
}

impl TokenSettings {
    /// Log in with a one-time token.
    pub async fn consume(
        &self,
        ctx: &Context<'_>,
        token: &str,
        realm: &str,
    ) -> Result<Principal, Refusal> {
        let label = crate::tokens::log_label(token);
        let outcome = self.store.consume(token, self.max_age).await.map_err(|e| {
            warn!(store = self.store.kind(), cause = %e.0, "token login refused: the token store is unavailable");
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
                        self.max_age.as_secs()
                    ),
                ));
            }
        };
        let Some(role) = record.role.clone().or_else(|| self.role.clone()) else {
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
            authprovider: self.store.kind().into(),
            realm: realm.to_owned(),
            extra: Dict::new(),
        };
        admit(ctx, principal, "the token")
    }
}

/// The token method itself: a ticket challenge whose answer is a token.
#[derive(Debug)]
pub struct TokenLogin(pub Arc<TokenSettings>);

impl Method for TokenLogin {
    fn name(&self) -> &'static str {
        "token"
    }

    async fn hello(&self, hello: &Hello<'_>, _ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        Ok(Outcome::Challenge(
            Challenge {
                authmethod: "ticket".into(),
                extra: Dict::new(),
            },
            PendingAuth::Token(PendingToken {
                settings: self.0.clone(),
                hello_realm: hello.realm.to_owned(),
            }),
        ))
    }
}

impl Challenged for PendingToken {
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal> {
        self.settings
            .consume(ctx, signature, &self.hello_realm)
            .await
    }
}
