//! `tls`: the client is who its TLS client certificate says. The endpoint
//! (`tls.ca_certificates`) has verified the certificate during the
//! handshake (chain, validity); this method maps it to a principal: by its
//! SHA-1 fingerprint (static, Crossbar.io's `certificate-sha1`), or by an
//! authenticator that sees the certificate in `details.transport.client_cert`
//! (dynamic). No CHALLENGE: the handshake was the proof.

use proto::errors::uri as wamp_uri;
use proto::{Dict, Value};

use super::authenticator::Resolved;
use super::{Context, Hello, Method, Outcome, Principal, Refusal, admit, deny};
use trellis_config::router::TlsPrincipal;

/// The transport's TLS client-certificate login.
#[derive(Debug)]
pub struct TlsLogin(pub Resolved<TlsPrincipal>);

fn cert_field<'a>(cert: &'a Dict, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut d = cert;
    for key in parents {
        match d.get(*key) {
            Some(Value::Dict(inner)) => d = inner,
            _ => return None,
        }
    }
    d.get(*last).and_then(Value::as_str)
}

impl Method for TlsLogin {
    fn name(&self) -> &'static str {
        "tls"
    }

    async fn hello(&self, hello: &Hello<'_>, ctx: &Context<'_>) -> Result<Outcome, Refusal> {
        let Some(Value::Dict(cert)) = ctx.transport.get("client_cert") else {
            return Err(deny(
                wamp_uri::AUTHENTICATION_FAILED,
                "tls authentication needs a TLS client certificate, and this connection presented none",
            ));
        };
        let sha1 = cert_field(cert, &["sha1"]).unwrap_or_default().to_owned();
        let realm = hello.realm;
        let principal = match &self.0.authenticator {
            Some(a) => {
                let authid: Value = hello.authid.as_deref().map_or(Value::Null, Into::into);
                let details = ctx.details("tls", authid, hello.authextra.clone());
                let v = a.ask(ctx, realm, hello.authid.as_deref(), details).await?;
                // Without the authenticator's word, the certificate's
                // subject CN, else its fingerprint.
                let authid = v.authid.clone().unwrap_or_else(|| {
                    cert_field(cert, &["subject", "cn"]).map_or_else(|| sha1.clone(), str::to_owned)
                });
                let principal = Principal {
                    authid,
                    authrole: v.role,
                    authmethod: "tls".into(),
                    authprovider: a.provider().into(),
                    realm: v.realm.unwrap_or_else(|| realm.to_owned()),
                    extra: v.extra,
                };
                admit(ctx, principal, &a.label())?
            }
            None => {
                let found = self.0.cfg.principals.iter().find(|(_, p)| {
                    trellis_config::router::normalized_fingerprint(&p.certificate_sha1).as_deref()
                        == Some(sha1.as_str())
                });
                let Some((authid, p)) = found else {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "no tls principal has this client certificate (SHA-1 {sha1}, subject CN {:?})",
                            cert_field(cert, &["subject", "cn"]).unwrap_or("")
                        ),
                    ));
                };
                if hello.authid.as_ref().is_some_and(|asked| asked != authid) {
                    return Err(deny(
                        wamp_uri::AUTHENTICATION_FAILED,
                        format!(
                            "the client certificate is principal {authid:?}'s, not {:?}'s",
                            hello.authid.as_deref().unwrap_or("")
                        ),
                    ));
                }
                let principal = Principal {
                    authid: authid.clone(),
                    authrole: p.role.clone(),
                    authmethod: "tls".into(),
                    authprovider: "static".into(),
                    realm: p.realm.clone().unwrap_or_else(|| realm.to_owned()),
                    extra: Dict::new(),
                };
                admit(ctx, principal, "the tls principal")?
            }
        };
        Ok(Outcome::Welcome(principal))
    }
}
