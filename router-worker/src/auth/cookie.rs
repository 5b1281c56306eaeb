//! `cookie`: a browser whose tracking cookie logged in before (by another
//! method, on a transport with `cookie` tracking) is welcomed as that
//! principal, with the method it logged in by and `authprovider`
//! `cookie`, as Crossbar.io does. The principal must still be granted: a
//! static principal that the config no longer has (or gives another role)
//! is revoked, and so is a method the transport no longer offers; the
//! realm and the role must still exist.

use proto::Dict;
use proto::errors::uri as wamp_uri;

use super::{AnyMethod, Context, Hello, Method, Outcome, Principal, Refusal, admit, refuse};
use crate::cookies::CookieLogin;

/// The transport's cookie login.
#[derive(Debug)]
pub struct CookieMethod;

impl Method for CookieMethod {
    fn name(&self) -> &'static str {
        "cookie"
    }

    async fn hello(&self, _hello: &Hello<'_>, _ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        // Settled by `welcome`, which sees the other methods.
        Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            "this connection's cookie has not logged in",
        ))
    }
}

/// Whether the transport still grants what the cookie logged in as.
fn still_granted(methods: &[AnyMethod], login: &CookieLogin) -> Result<(), String> {
    let method = methods
        .iter()
        .find(|m| m.name() == login.authmethod)
        .ok_or_else(|| format!("this transport no longer offers {}", login.authmethod))?;
    if login.authprovider != "static" {
        // A dynamic authenticator's word stands until logout or expiry.
        return Ok(());
    }
    let (id, role) = (login.authid.as_str(), login.authrole.as_str());
    let role_of = match method {
        AnyMethod::Ticket(m) => m.0.cfg.principals.get(id).map(|p| p.role.as_str()),
        AnyMethod::WampCra(m) => {
            m.0.cfg
                .principals
                .iter()
                .find(|(name, u)| u.authid.as_deref().unwrap_or(name.as_str()) == id)
                .map(|(_, u)| u.role.as_str())
        }
        AnyMethod::Cryptosign(m) => m.0.cfg.principals.get(id).map(|p| p.role.as_str()),
        AnyMethod::Scram(m) => m.0.cfg.principals.get(id).map(|p| p.role.as_str()),
        AnyMethod::Tls(m) => m.0.cfg.principals.get(id).map(|p| p.role.as_str()),
        _ => Some(role),
    };
    match role_of {
        Some(r) if r == role => Ok(()),
        Some(r) => Err(format!("principal {id:?} now has role {r:?}")),
        None => Err(format!(
            "principal {id:?} is no longer configured for {}",
            login.authmethod
        )),
    }
}

/// Welcome the cookie's principal, or say why not. A refusal does not
/// count against the login limits: the cookie is 24 random characters,
/// not something to guess, and a page that tries its cookie on every load
/// must not lock its user out.
pub(crate) fn welcome(
    methods: &[AnyMethod],
    hello: &Hello<'_>,
    ctx: &Context<'_>,
) -> Result<Principal, Refusal> {
    let Some(login) = &ctx.cookie else {
        return Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            "this connection's cookie has not logged in (or has logged out, or expired)",
        ));
    };
    if !hello.realm.is_empty() && hello.realm != login.realm {
        return Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!(
                "this connection's cookie logged in to realm {:?}, not {:?}",
                login.realm, hello.realm
            ),
        ));
    }
    still_granted(methods, login).map_err(|why| {
        refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!("this connection's cookie no longer logs in: {why}"),
        )
    })?;
    let principal = Principal {
        authid: login.authid.clone(),
        authrole: login.authrole.clone(),
        authmethod: login.authmethod.clone(),
        authprovider: "cookie".into(),
        realm: login.realm.clone(),
        extra: Dict::new(),
    };
    admit(ctx, principal, "the cookie's login")
}
