//! `cryptosign`: the client proves it holds the Ed25519 key whose public
//! half it names in `authextra.pubkey`, by signing a random challenge. The
//! key is authorized by the config (static) or by an authenticator
//! (dynamic).

use proto::errors::uri as wamp_uri;
use proto::message::Challenge;
use proto::{Dict, Value};

use super::authenticator::Resolved;
use super::{
    Challenged, Context, Hello, Method, Outcome, PendingAuth, Principal, Refusal, admit, deny,
};
use trellis_config::router::CryptosignPrincipal;

/// The transport's cryptosign login.
#[derive(Debug)]
pub struct Cryptosign(pub Resolved<CryptosignPrincipal>);

/// A cryptosign CHALLENGE sent: verify the signature of `challenge`.
#[derive(Debug)]
pub struct PendingCryptosign {
    principal: Principal,
    pubkey: String,
    challenge: [u8; 32],
}

impl Method for Cryptosign {
    fn name(&self) -> &'static str {
        "cryptosign"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let (realm, authid) = (hello.realm, &hello.authid);
        let pubkey = match hello.authextra.get("pubkey") {
            Some(Value::Str(k)) if proto::auth::parse_pubkey(k).is_ok() => k.to_ascii_lowercase(),
            _ => {
                return Err(deny(
                    wamp_uri::AUTHENTICATION_FAILED,
                    "cryptosign needs HELLO.Details.authextra.pubkey: the client's Ed25519 public key as 64 hex characters",
                ));
            }
        };
        let principal = match &self.0.authenticator {
            Some(a) => {
                let authid_value = authid.clone().map_or(Value::Null, Value::from);
                let details = ctx.details("cryptosign", authid_value, hello.authextra.clone());
                let v = a.ask(ctx, realm, authid.as_deref(), details).await?;
                if let Some(k) = &v.pubkey
                    && !k.eq_ignore_ascii_case(&pubkey)
                {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!("{} authorized a different public key", a.label()),
                    ));
                }
                let principal = Principal {
                    authid: v
                        .authid
                        .clone()
                        .or(authid.clone())
                        .unwrap_or_else(|| pubkey.clone()),
                    authrole: v.role.clone(),
                    authmethod: "cryptosign".into(),
                    authprovider: a.provider().into(),
                    realm: v.realm.clone().unwrap_or_else(|| realm.to_owned()),
                    extra: v.extra,
                };
                admit(ctx, principal, &a.label())?
            }
            None => {
                let found = self.0.cfg.principals.iter().find(|(id, p)| {
                    authid.as_ref().is_none_or(|a| a == *id)
                        && p.authorized_keys
                            .iter()
                            .any(|k| k.eq_ignore_ascii_case(&pubkey))
                });
                let Some((id, p)) = found else {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        "no principal is authorized for this public key",
                    ));
                };
                Principal {
                    authid: id.clone(),
                    authrole: p.role.clone(),
                    authmethod: "cryptosign".into(),
                    authprovider: "static".into(),
                    realm: p.realm.clone().unwrap_or_else(|| realm.to_owned()),
                    extra: Dict::new(),
                }
            }
        };
        let challenge: [u8; 32] = proto::auth::random_bytes();
        Ok(Outcome::Challenge(
            Challenge {
                authmethod: "cryptosign".into(),
                extra: proto::dict! { "challenge" => hex::encode(challenge), "channel_binding" => Value::Null },
            },
            PendingAuth::Cryptosign(PendingCryptosign {
                principal,
                pubkey,
                challenge,
            }),
        ))
    }
}

impl Challenged for PendingCryptosign {
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal> {
        if let Err(e) = proto::auth::cryptosign_verify(&self.pubkey, &self.challenge, signature) {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                format!(
                    "cryptosign authentication failed for authid {:?}: {e}",
                    self.principal.authid
                ),
            ));
        }
        admit(ctx, self.principal, "cryptosign")
    }
}
