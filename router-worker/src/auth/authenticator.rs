//! Dynamic authenticators: a procedure in some realm that the router calls
//! during the handshake (Crossbar.io's `"type": "dynamic"`), and the checks
//! on what it answers.

use std::time::Duration;

use proto::errors::uri as wamp_uri;
use proto::{Dict, Payload, Value};

use super::{Context, Refusal, deny, refuse};
use crate::realm::InternalCallError;
use trellis_config::router::{AuthKind, MethodAuth, SecretKind};

/// Where a method's authenticator is and how long it may take.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// The procedure (`com.example.authenticate`).
    pub procedure: String,
    /// The realm it is registered in; the HELLO's realm when `None`.
    pub realm: Option<String>,
    /// The transport's `authenticator_timeout`.
    pub timeout: Duration,
}

/// A ticket, WAMP-CRA or cryptosign config, with its authenticator when
/// it is dynamic.
#[derive(Debug)]
pub struct Resolved<P> {
    pub cfg: MethodAuth<P>,
    /// Set when the config is dynamic.
    pub authenticator: Option<Authenticator>,
}

impl<P> Resolved<P> {
    /// Resolve a method's config; `timeout` is the transport's
    /// `authenticator_timeout`.
    pub fn new(cfg: MethodAuth<P>, timeout: Duration) -> Resolved<P> {
        let authenticator = (cfg.kind == AuthKind::Dynamic).then(|| Authenticator {
            procedure: cfg.authenticator.clone().unwrap_or_default(),
            realm: cfg.authenticator_realm.clone(),
            timeout,
        });
        Resolved { cfg, authenticator }
    }
}

impl Authenticator {
    /// The session's `authprovider`: `function` for the router's own
    /// function authenticators (as Crossbar.io names them), else `dynamic`.
    pub fn provider(&self) -> &'static str {
        match &self.realm {
            Some(r) if r.starts_with(trellis_config::router::INTERNAL_REALM_PREFIX) => "function",
            _ => "dynamic",
        }
    }

    /// Who an error names: `authenticator "com.example.authenticate"`.
    pub fn label(&self) -> String {
        format!("authenticator {:?}", self.procedure)
    }

    /// Call the authenticator with `(realm, authid, details)` (authid null
    /// when the client gave none) and turn its failures into refusals.
    pub async fn ask(
        &self,
        ctx: &Context<'_>,
        hello_realm: &str,
        authid: Option<&str>,
        details: Dict,
    ) -> Result<Verdict, Refusal> {
        let procedure = &self.procedure;
        let realm_name = self.realm.as_deref().unwrap_or(hello_realm);
        let Some(realm) = ctx.realms.get(realm_name) else {
            return Err(refuse(
                wamp_uri::NO_SUCH_REALM,
                format!("realm {realm_name:?} does not exist on this router"),
            ));
        };
        let authid = authid.map_or(Value::Null, Into::into);
        let payload = Payload::args(vec![hello_realm.into(), authid, details.into()]);
        let asked = std::time::Instant::now();
        let answer = realm.call(procedure, payload, self.timeout).await;
        if let Some(h) = ctx.latency {
            h.observe(asked.elapsed());
        }
        let payload = match answer {
            Ok(p) => p,
            Err(InternalCallError::NoSuchProcedure) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "authenticator {procedure:?} is not registered in realm {realm_name:?}"
                    ),
                ));
            }
            Err(InternalCallError::Timeout) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!(
                        "authenticator {procedure:?} did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                ));
            }
            Err(InternalCallError::Gone) => {
                return Err(refuse(
                    wamp_uri::AUTHENTICATION_FAILED,
                    format!("realm {realm_name:?} of authenticator {procedure:?} is shutting down"),
                ));
            }
            Err(InternalCallError::Error { uri, message }) => {
                // A deliberate denial keeps the authenticator's URI; a crash
                // in the authenticator is an authentication failure.
                let crashed = uri == "wamp.error.runtime_error" || uri == wamp_uri::CANCELED;
                let reason = if crashed {
                    wamp_uri::AUTHENTICATION_FAILED
                } else {
                    uri.as_str()
                };
                let what = if crashed { "failed" } else { "denied access" };
                return Err(deny(
                    reason,
                    format!("authenticator {procedure:?} {what} ({uri}): {message}"),
                ));
            }
        };
        parse_verdict(procedure, &payload)
    }
}

/// What a dynamic authenticator said.
#[derive(Debug, Default)]
pub struct Verdict {
    pub role: String,
    pub authid: Option<String>,
    pub realm: Option<String>,
    pub extra: Dict,
    pub secret: Option<String>,
    pub salt: Option<String>,
    pub iterations: Option<u32>,
    pub keylen: Option<u32>,
    pub secret_kind: SecretKind,
    pub pubkey: Option<String>,
    /// SCRAM: the credential's fields, as a static principal has them.
    pub kdf: Option<String>,
    pub memory: Option<u32>,
    pub stored_key: Option<String>,
    pub server_key: Option<String>,
}

fn opt_string(d: &Dict, key: &str, procedure: &str) -> Result<Option<String>, Refusal> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!(
                "authenticator {procedure:?} returned {key:?} as a {}, expected a string",
                other.type_name()
            ),
        )),
    }
}

/// Like [`opt_string`], but also takes UTF-8 bytes: autobahn-python's
/// `derive_key()` returns the key as bytes, and authenticators pass it on.
fn opt_text(d: &Dict, key: &str, procedure: &str) -> Result<Option<String>, Refusal> {
    match d.get(key) {
        Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map(Some).map_err(|_| {
            refuse(
                wamp_uri::AUTHENTICATION_FAILED,
                format!(
                    "authenticator {procedure:?} returned {key:?} as bytes that are not UTF-8 text"
                ),
            )
        }),
        _ => opt_string(d, key, procedure),
    }
}

fn opt_u32(d: &Dict, key: &str, procedure: &str) -> Result<Option<u32>, Refusal> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| {
            refuse(
                wamp_uri::AUTHENTICATION_FAILED,
                format!("authenticator {procedure:?} returned {key:?} as {v}, expected a positive integer"),
            )
        }),
    }
}

pub(crate) fn parse_verdict(procedure: &str, payload: &Payload) -> Result<Verdict, Refusal> {
    let shape = "expected a role (string) or a dict with \"role\"";
    match payload.args.first() {
        Some(Value::Str(role)) => Ok(Verdict {
            role: role.clone(),
            ..Verdict::default()
        }),
        Some(Value::Dict(d)) => {
            let role = match d.get("role") {
                Some(Value::Str(r)) => r.clone(),
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned \"role\" as a {}; {shape}",
                            other.type_name()
                        ),
                    ));
                }
                None => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned a dict without \"role\"; {shape}"
                        ),
                    ));
                }
            };
            let extra = match d.get("extra") {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Dict(e)) => e.clone(),
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned \"extra\" as a {}, expected a dict",
                            other.type_name()
                        ),
                    ));
                }
            };
            let secret_kind = match opt_string(d, "secret-kind", procedure)?.as_deref() {
                None | Some("password") => SecretKind::Password,
                Some("derived-key") => SecretKind::DerivedKey,
                Some(other) => {
                    return Err(refuse(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "authenticator {procedure:?} returned secret-kind {other:?}, expected \"password\" or \"derived-key\""
                        ),
                    ));
                }
            };
            Ok(Verdict {
                role,
                authid: opt_string(d, "authid", procedure)?,
                realm: opt_string(d, "realm", procedure)?,
                extra,
                secret: opt_text(d, "secret", procedure)?,
                salt: opt_text(d, "salt", procedure)?,
                iterations: opt_u32(d, "iterations", procedure)?,
                keylen: opt_u32(d, "keylen", procedure)?,
                secret_kind,
                pubkey: opt_string(d, "pubkey", procedure)?,
                kdf: opt_string(d, "kdf", procedure)?,
                memory: opt_u32(d, "memory", procedure)?,
                stored_key: opt_string(d, "stored-key", procedure)?,
                server_key: opt_string(d, "server-key", procedure)?,
            })
        }
        None | Some(Value::Null) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!("authenticator {procedure:?} returned nothing (null); {shape}"),
        )),
        Some(other) => Err(refuse(
            wamp_uri::AUTHENTICATION_FAILED,
            format!(
                "authenticator {procedure:?} returned a {}; {shape}",
                other.type_name()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticator_answers_are_checked() {
        let p = |v: Value| Payload::args(vec![v]);
        assert_eq!(parse_verdict("a", &p("user".into())).unwrap().role, "user");
        let e = parse_verdict("com.auth", &Payload::default()).unwrap_err();
        assert!(
            e.message.contains("returned nothing (null)") && e.message.contains("com.auth"),
            "{}",
            e.message
        );
        let e = parse_verdict("a", &p(Value::Int(3))).unwrap_err();
        assert!(e.message.contains("returned a integer"), "{}", e.message);
        let e = parse_verdict("a", &p(Value::Dict(proto::dict! {"authid" => "x"}))).unwrap_err();
        assert!(e.message.contains("without \"role\""), "{}", e.message);
        let v = parse_verdict(
            "a",
            &p(Value::Dict(proto::dict! {"role" => "r", "authid" => "ID09125", "extra" => proto::dict!{"k" => 1i64}})),
        )
        .unwrap();
        assert_eq!(
            (v.role.as_str(), v.authid.as_deref()),
            ("r", Some("ID09125"))
        );
        assert_eq!(v.extra.len(), 1);
    }
}
