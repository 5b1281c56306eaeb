//! `anonymous`: no credential; the transport's anonymous role, and an
//! authid the router picks (or the config names), never the client's.

use proto::Dict;
use proto::errors::uri as wamp_uri;

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
