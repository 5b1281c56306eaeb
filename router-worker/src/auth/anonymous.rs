//! `anonymous`: no credential; the transport's anonymous role, and an
//! authid the router picks (or the config names), never the client's.

use proto::Dict;

use super::{Context, Hello, Method, Outcome, Principal, Refusal, admit, random_authid};

/// The transport's anonymous login.
#[derive(Debug)]
pub struct Anonymous {
    /// The role every anonymous session gets.
    pub role: String,
    /// The authid every anonymous session gets, when the config names one;
    /// else each gets a fresh random one. Never the client's choice: an
    /// authid decides `eligible_authid` and what callees see.
    pub authid: Option<String>,
}

impl Method for Anonymous {
    fn name(&self) -> &'static str {
        "anonymous"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        // The HELLO's authid is a wish nobody vouched for.
        let principal = Principal {
            authid: self.authid.clone().unwrap_or_else(random_authid),
            authrole: self.role.clone(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            realm: hello.realm.to_owned(),
            extra: Dict::new(),
        };
        admit(ctx, principal, "anonymous authentication").map(Outcome::Welcome)
    }
}
