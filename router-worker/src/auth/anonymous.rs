//! `anonymous`: no credential; the transport's anonymous role, and an
//! authid the router picks (or the config names), never the client's. A
//! dynamic anonymous login (Crossbar.io's `"type": "dynamic"`) asks an
//! authenticator for the role, and maybe the authid, realm and authextra.

use proto::Dict;
use proto::errors::uri as wamp_uri;

use super::authenticator::Authenticator;
use super::{Context, Hello, Method, Outcome, Principal, Refusal, admit, deny, random_authid};

/// The transport's anonymous login.
#[derive(Debug)]
pub struct Anonymous {
    /// The role every anonymous session gets.
    pub role: String,
    /// The authid every anonymous session gets, when the config names one;
    /// else each gets a fresh random one. Never the client's choice: an
    /// authid decides `eligible_authid` and what callees see.
    pub authid: Option<String>,
    /// The only realm anonymous sessions may join, when the config names
    /// one; a HELLO without a realm joins it.
    pub realm: Option<String>,
    /// Welcome whatever the client offers (a router component's link).
    pub any_method: bool,
    /// Dynamic: the authenticator that decides role and authid (`role` and
    /// `authid` above are then unused).
    pub authenticator: Option<Authenticator>,
}

impl Method for Anonymous {
    fn name(&self) -> &'static str {
        "anonymous"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let realm = match &self.realm {
            Some(only) if !hello.realm.is_empty() && hello.realm != only.as_str() => {
                return Err(deny(
                    wamp_uri::NO_SUCH_REALM,
                    format!(
                        "anonymous sessions on this transport may only join realm {only:?} (auth.anonymous.realm), not {:?}",
                        hello.realm
                    ),
                ));
            }
            Some(only) => only.clone(),
            None => hello.realm.to_owned(),
        };
        if let Some(a) = &self.authenticator {
            let authid: proto::Value = hello
                .authid
                .as_deref()
                .map_or(proto::Value::Null, Into::into);
            let details = ctx.details("anonymous", authid, hello.authextra.clone());
            let v = a.ask(ctx, &realm, hello.authid.as_deref(), details).await?;
            // The authenticator may take the HELLO's authid; without its
            // word the session gets a random one, as a static login does.
            let principal = Principal {
                authid: v.authid.unwrap_or_else(random_authid),
                authrole: v.role,
                authmethod: "anonymous".into(),
                authprovider: a.provider().into(),
                realm: v.realm.unwrap_or(realm),
                extra: v.extra,
            };
            return admit(ctx, principal, &a.label()).map(Outcome::Welcome);
        }
        // The HELLO's authid is a wish nobody vouched for.
        let principal = Principal {
            authid: self.authid.clone().unwrap_or_else(random_authid),
            authrole: self.role.clone(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            realm,
            extra: Dict::new(),
        };
        admit(ctx, principal, "anonymous authentication").map(Outcome::Welcome)
    }
}
