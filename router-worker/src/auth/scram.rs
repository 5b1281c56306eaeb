//! `scram`: WAMP-SCRAM. The client sends its nonce in HELLO's authextra;
//! the router answers with the full nonce, the salt and the KDF's costs;
//! the client proves it knows the password without sending it, and the
//! router proves in WELCOME (`authextra.scram_server_signature`) that it
//! holds the principal's server key. The router keeps only the derived
//! keys (static principals, or an authenticator's answer): see
//! [`proto::scram`].

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use proto::errors::uri as wamp_uri;
use proto::message::Challenge;
use proto::scram::{Credential, Kdf};
use proto::{Dict, Value};

use super::authenticator::{Resolved, Verdict};
use super::{
    Challenged, Context, Hello, Method, Outcome, PendingAuth, Principal, Refusal, admit, deny,
};
use trellis_config::router::ScramPrincipal;

/// The longest client nonce taken (base64 characters).
const MAX_NONCE: usize = 256;

/// The transport's SCRAM login.
#[derive(Debug)]
pub struct Scram(pub Resolved<ScramPrincipal>);

/// A SCRAM CHALLENGE sent: check the proof against the AuthMessage.
#[derive(Debug)]
pub struct PendingScram {
    /// None: an unknown authid, challenged like a known one so that the
    /// answer does not tell who exists; it fails at AUTHENTICATE.
    principal: Option<(Principal, [u8; 32], [u8; 32])>,
    authid: String,
    message: String,
}

/// A per-process key for the salts of unknown authids: the same authid
/// gets the same salt every time, as a real one would.
fn decoy_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(proto::auth::random_bytes)
}

/// The credential an authenticator answered with.
fn from_verdict(v: &Verdict, label: &str) -> Result<Credential, Refusal> {
    let missing = |key: &str| {
        refuse_answer(format!(
            "{label} answered a SCRAM login without {key:?}: it returns kdf, iterations, memory (argon2id-13), salt, stored-key and server-key (hex), as `trellis scram-credential` prints them"
        ))
    };
    let kdf = v.kdf.as_deref().ok_or_else(|| missing("kdf"))?;
    let iterations = v.iterations.ok_or_else(|| missing("iterations"))?;
    let salt = v.salt.as_deref().ok_or_else(|| missing("salt"))?;
    let stored = v
        .stored_key
        .as_deref()
        .ok_or_else(|| missing("stored-key"))?;
    let server = v
        .server_key
        .as_deref()
        .ok_or_else(|| missing("server-key"))?;
    trellis_config::router::scram_credential(kdf, iterations, v.memory, salt, stored, server)
        .map_err(|problems| {
            let what: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            refuse_answer(format!(
                "{label} answered a SCRAM credential that is not valid ({})",
                what.join("; ")
            ))
        })
}

fn refuse_answer(message: String) -> Refusal {
    tracing::warn!("{message}");
    super::refuse(wamp_uri::AUTHENTICATION_FAILED, message)
}

impl Method for Scram {
    fn name(&self) -> &'static str {
        "scram"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let Some(authid) = hello.authid.clone() else {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                "scram authentication needs an authid in HELLO",
            ));
        };
        let client_nonce = match hello.authextra.get("nonce") {
            Some(Value::Str(n))
                if n.len() <= MAX_NONCE && B64.decode(n).is_ok_and(|b| !b.is_empty()) =>
            {
                n.clone()
            }
            _ => {
                return Err(deny(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "scram needs HELLO.Details.authextra.nonce: the client's random nonce in base64 (at most {MAX_NONCE} characters)"
                    ),
                ));
            }
        };
        match hello.authextra.get("channel_binding") {
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(deny(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "scram channel binding ({other}) is not supported by Trellis: leave authextra.channel_binding out (use TLS for the channel)"
                    ),
                ));
            }
        }
        let realm = hello.realm;
        let found = match &self.0.authenticator {
            Some(a) => {
                let details = ctx.details("scram", authid.as_str().into(), hello.authextra.clone());
                let v = a.ask(ctx, realm, Some(&authid), details).await?;
                let credential = from_verdict(&v, &a.label())?;
                let principal = Principal {
                    authid: v.authid.clone().unwrap_or_else(|| authid.clone()),
                    authrole: v.role.clone(),
                    authmethod: "scram".into(),
                    authprovider: a.provider().into(),
                    realm: v.realm.clone().unwrap_or_else(|| realm.to_owned()),
                    extra: v.extra,
                };
                Some((admit(ctx, principal, &a.label())?, credential))
            }
            None => match self.0.cfg.principals.get(&authid) {
                Some(p) => match p.credential() {
                    Ok(credential) => Some((
                        Principal {
                            authid: authid.clone(),
                            authrole: p.role.clone(),
                            authmethod: "scram".into(),
                            authprovider: "static".into(),
                            realm: p.realm.clone().unwrap_or_else(|| realm.to_owned()),
                            extra: Dict::new(),
                        },
                        credential,
                    )),
                    // check refuses such a config; never admit on one.
                    Err(_) => None,
                },
                None => None,
            },
        };
        let (kdf, salt) = match &found {
            Some((_, c)) => (c.kdf, c.salt.clone()),
            None => (
                Kdf::Argon2id13 {
                    iterations: 4096,
                    memory: 512,
                },
                proto::scram::hmac(decoy_key(), authid.as_bytes())[..16].to_vec(),
            ),
        };
        let nonce = format!(
            "{client_nonce}{}",
            B64.encode(proto::auth::random_bytes::<18>())
        );
        let salt_b64 = B64.encode(&salt);
        // As autobahn signs it: the authid SASLprep'd.
        let prepared = proto::scram::prepared_authid(&authid)
            .map_err(|why| deny(wamp_uri::AUTHENTICATION_FAILED, why))?;
        let message = proto::scram::auth_message(
            &prepared,
            &client_nonce,
            &nonce,
            &salt_b64,
            kdf.iterations(),
        );
        let mut extra = proto::dict! {
            "nonce" => nonce,
            "kdf" => kdf.name(),
            "salt" => salt_b64,
            "iterations" => i64::from(kdf.iterations()),
        };
        if let Some(m) = kdf.memory() {
            extra.insert("memory".into(), i64::from(m).into());
        }
        Ok(Outcome::Challenge(
            Challenge {
                authmethod: "scram".into(),
                extra,
            },
            PendingAuth::Scram(PendingScram {
                principal: found.map(|(p, c)| (p, c.stored_key, c.server_key)),
                authid,
                message,
            }),
        ))
    }
}

impl Challenged for PendingScram {
    async fn authenticate(self, signature: &str, ctx: &Context<'_>) -> Result<Principal, Refusal> {
        let verified = self.principal.and_then(|(p, stored, server)| {
            proto::scram::verify(&stored, &server, &self.message, signature).map(|sig| (p, sig))
        });
        let Some((mut principal, server_signature)) = verified else {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                format!(
                    "scram authentication failed for authid {:?}: unknown authid or wrong password",
                    self.authid
                ),
            ));
        };
        principal
            .extra
            .insert("scram_server_signature".into(), server_signature.into());
        admit(ctx, principal, "scram")
    }
}
