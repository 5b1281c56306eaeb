//! `wampcra`: WAMP challenge-response. The router sends a challenge (with
//! the salt, iterations and key length of a salted secret); the client
//! answers with its HMAC under the user's key. The key comes from the config
//! (static) or from an authenticator (dynamic).

use proto::errors::uri as wamp_uri;
use proto::message::Challenge;
use proto::{Dict, Value};

use super::authenticator::Resolved;
use super::{
    Challenged, Context, Hello, Method, Outcome, PendingAuth, Principal, Refusal, admit, deny,
    refuse,
};
use trellis_config::router::{CraUser, SecretKind};

/// The transport's WAMP-CRA login.
#[derive(Debug)]
pub struct WampCra(pub Resolved<CraUser>);

/// A WAMP-CRA CHALLENGE sent: verify the HMAC of `challenge` under `key`.
#[derive(Debug)]
pub struct PendingCra {
    principal: Principal,
    key: Vec<u8>,
    challenge: String,
}

/// The WAMP-CRA key for a user: the secret's text, or for a salted secret
/// the derived key's base64 text (derived here from a password, or stored
/// already derived).
pub(crate) fn cra_key(
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

impl Method for WampCra {
    fn name(&self) -> &'static str {
        "wampcra"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let realm = hello.realm;
        let Some(authid) = hello.authid.clone() else {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                "WAMP-CRA authentication needs an authid in HELLO",
            ));
        };
        let (principal, key, salt_extra) = match &self.0.authenticator {
            Some(a) => {
                let details =
                    ctx.details("wampcra", authid.as_str().into(), hello.authextra.clone());
                let v = a.ask(ctx, realm, Some(&authid), details).await?;
                let Some(secret) = v.secret.as_deref() else {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {:?} returned no \"secret\" for WAMP-CRA user {authid:?}",
                            a.procedure
                        ),
                    ));
                };
                if trellis_config::router::blank(secret)
                    || v.salt.as_deref().is_some_and(trellis_config::router::blank)
                {
                    let what = if trellis_config::router::blank(secret) {
                        "secret"
                    } else {
                        "salt"
                    };
                    tracing::warn!(authenticator = %a.procedure, authid = %authid,
                        "the authenticator returned an empty WAMP-CRA {what}: login refused (an empty secret is never accepted)");
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {:?} returned an empty \"{what}\" for WAMP-CRA user {authid:?}: an empty secret is never accepted; fix the authenticator",
                            a.procedure
                        ),
                    ));
                }
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
                    authprovider: a.provider().into(),
                    realm: v.realm.clone().unwrap_or_else(|| realm.to_owned()),
                    extra: v.extra,
                };
                (admit(ctx, principal, &a.label())?, key, extra)
            }
            None => match self.0.cfg.principals.get(&authid) {
                Some(u) => {
                    let (key, extra) = cra_key(
                        &u.secret,
                        u.salt.as_deref(),
                        u.iterations,
                        u.keylen,
                        u.secret_kind,
                    );
                    let principal = Principal {
                        authid: u.authid.clone().unwrap_or_else(|| authid.clone()),
                        authrole: u.role.clone(),
                        authmethod: "wampcra".into(),
                        authprovider: "static".into(),
                        realm: u.realm.clone().unwrap_or_else(|| realm.to_owned()),
                        extra: match u.extra.as_ref().map(Value::from) {
                            Some(Value::Dict(d)) => d,
                            _ => Dict::new(),
                        },
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
            PendingAuth::Cra(PendingCra {
                principal,
                key,
                challenge,
            }),
        ))
    }
}

impl Challenged for PendingCra {
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal> {
        if self.principal.authrole.is_empty()
            || !proto::auth::cra_verify(&self.key, &self.challenge, signature)
        {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                format!(
                    "WAMP-CRA authentication failed for authid {:?}: unknown authid or wrong signature",
                    self.principal.authid
                ),
            ));
        }
        admit(ctx, self.principal, "WAMP-CRA")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
