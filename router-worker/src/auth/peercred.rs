//! `peercred`: on a Unix socket, the connecting process's user (from
//! SO_PEERCRED) is the credential, looked up by uid, by user name, or `*`.

use proto::errors::uri as wamp_uri;
use proto::{Dict, Value};

use super::{Context, Hello, Method, Outcome, Principal, Refusal, admit, deny};
use trellis_config::router::PeerCredAuth;

/// The transport's peer-credential login.
#[derive(Debug)]
pub struct PeerCred(pub PeerCredAuth);

impl PeerCred {
    /// A local user listed for peer credentials is known without a
    /// challenge when it offers nothing else (or only `anonymous`): the
    /// answer, or `None` to go on with the offered methods.
    pub fn before_methods(
        &self,
        hello: &Hello<'_>,
        ctx: &Context<'_>,
    ) -> Option<Result<Outcome, Refusal>> {
        if !hello
            .offered
            .iter()
            .all(|m| m == "anonymous" || m == "peercred")
        {
            return None;
        }
        match self.principal(ctx, hello.realm) {
            Err(r) => Some(Err(r)),
            Ok(Some(principal)) => {
                Some(admit(ctx, principal, "peer-credential authentication").map(Outcome::Welcome))
            }
            Ok(None) if hello.offered.iter().all(|m| m == "peercred") => Some(Err(not_listed(ctx))),
            Ok(None) => None,
        }
    }

    /// The principal the connecting user maps to, if listed (by uid or
    /// user name).
    fn principal(
        &self,
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
        let principals = &self.0.principals;
        let entry = principals
            .get(&uid.to_string())
            .or_else(|| name.as_ref().and_then(|n| principals.get(n)))
            .or_else(|| principals.get("*"));
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
}

fn not_listed(ctx: &Context<'_>) -> Refusal {
    deny(
        wamp_uri::AUTHENTICATION_FAILED,
        format!(
            "the connecting user ({}) is not listed in this transport's auth.peercred.principals",
            ctx.transport
                .get("peer_uid")
                .and_then(Value::as_u64)
                .map_or("unknown uid".to_owned(), |u| format!("uid {u}"))
        ),
    )
}

impl Method for PeerCred {
    fn name(&self) -> &'static str {
        "peercred"
    }

    /// Offered together with methods that challenge, and chosen: the user
    /// must be listed.
    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        match self.principal(ctx, hello.realm)? {
            Some(principal) => {
                admit(ctx, principal, "peer-credential authentication").map(Outcome::Welcome)
            }
            None => Err(not_listed(ctx)),
        }
    }
}
