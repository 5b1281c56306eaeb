//! `ticket`: a shared secret sent in AUTHENTICATE, checked against the
//! config (static, in constant time) or by an authenticator (dynamic).

use proto::Dict;
use proto::errors::uri as wamp_uri;
use proto::message::Challenge;

use super::authenticator::{Authenticator, Resolved};
use super::{
    Challenged, Context, Hello, Method, Outcome, PendingAuth, Principal, Refusal, admit, deny,
};
use trellis_config::router::TicketPrincipal;

/// The transport's ticket login.
#[derive(Debug)]
pub struct Ticket(pub Resolved<TicketPrincipal>);

/// A ticket CHALLENGE sent, waiting for the ticket.
#[derive(Debug)]
pub enum PendingTicket {
    /// Compare with the principal's ticket (None: unknown authid, which
    /// fails the same way as a wrong ticket).
    Static {
        authid: String,
        principal: Option<(TicketPrincipal, String)>,
    },
    /// The authenticator decides once it has the ticket.
    Dynamic {
        authenticator: Authenticator,
        authid: String,
        hello_realm: String,
        authextra: Dict,
    },
}

impl Method for Ticket {
    fn name(&self) -> &'static str {
        "ticket"
    }

    async fn hello(&self, hello: &Hello<'_>, _ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let Some(authid) = hello.authid.clone() else {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                "ticket authentication needs an authid in HELLO",
            ));
        };
        let pending = match &self.0.authenticator {
            Some(a) => PendingTicket::Dynamic {
                authenticator: a.clone(),
                authid,
                hello_realm: hello.realm.to_owned(),
                authextra: hello.authextra.clone(),
            },
            None => PendingTicket::Static {
                principal: self
                    .0
                    .cfg
                    .principals
                    .get(&authid)
                    .map(|p| (p.clone(), hello.realm.to_owned())),
                authid,
            },
        };
        Ok(Outcome::Challenge(
            Challenge {
                authmethod: "ticket".into(),
                extra: Dict::new(),
            },
            PendingAuth::Ticket(pending),
        ))
    }
}

impl Challenged for PendingTicket {
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal> {
        match self {
            PendingTicket::Static { authid, principal } => {
                // An empty ticket is never a ticket (check refuses it in the
                // config; this holds even if one got past).
                let ok = principal.as_ref().is_some_and(|(p, _)| {
                    !trellis_config::router::blank(&p.ticket)
                        && bool::from(subtle::ConstantTimeEq::ct_eq(
                            p.ticket.as_bytes(),
                            signature.as_bytes(),
                        ))
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
                admit(ctx, principal, "the ticket principal")
            }
            PendingTicket::Dynamic {
                authenticator,
                authid,
                hello_realm,
                authextra,
            } => {
                let mut details = ctx.details("ticket", authid.as_str().into(), authextra);
                details.insert("ticket".into(), signature.into());
                let v = authenticator
                    .ask(ctx, &hello_realm, Some(&authid), details)
                    .await?;
                let principal = Principal {
                    authid: v.authid.unwrap_or(authid),
                    authrole: v.role,
                    authmethod: "ticket".into(),
                    authprovider: authenticator.provider().into(),
                    realm: v.realm.unwrap_or(hello_realm),
                    extra: v.extra,
                };
                admit(ctx, principal, &authenticator.label())
            }
        }
    }
}
