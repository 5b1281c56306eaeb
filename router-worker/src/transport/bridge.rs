//! The HTTP bridge (Crossbar.io's `caller` and `publisher` web services):
//! POST or PUT a JSON object to call a procedure or publish an event, as a
//! session of the configured realm and role. Wire-compatible with
//! Crossbar.io's bridge (paths, JSON, status codes, the HMAC signature), and
//! lenient where that is safe: a signature with or without base64 padding,
//! a timestamp with or without fractional seconds, compared in constant
//! time; the body's size is checked before it is read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::local::LocalSession;
use crate::realms::Realms;
use proto::{Dict, Payload, Value};
use subtle::ConstantTimeEq;
use trellis_config::router::{BridgeOptions, Compat, MAX_BRIDGE_BODY};

/// What a bridge path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Caller,
    Publisher,
    /// Any request body, published with the request's headers.
    Webhook,
}

/// One bridge path, resolved at bind time; its session joins on first use.
pub struct Bridge {
    pub service: Service,
    pub realm: String,
    pub role: String,
    pub options: BridgeOptions,
    pub tls: bool,
    /// The router's `options.compat`: the webhook's header names.
    pub compat: Compat,
    /// `options.require_ip`, parsed.
    allowed: Option<trellis_config::net::Networks>,
    /// The path's session, joined on first use and again after it ended
    /// (killed through the meta API, or its realm restarted).
    session: arc_swap::ArcSwapOption<LocalSession>,
    /// Held while a session joins, so that requests wait for one join.
    joining: tokio::sync::Mutex<()>,
    /// `options.replay_protection`: the signatures taken recently.
    seen: std::sync::Mutex<ReplayGuard>,
}

/// Signatures seen within the timestamp window, so that a captured signed
/// request cannot be sent again. Bounded: when full of live entries, new
/// requests are refused (503) rather than remembered less.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// Signature → when it may be forgotten.
    seen: HashMap<String, std::time::Instant>,
}

/// Most signatures a bridge path remembers (about 10 MB).
pub const MAX_REMEMBERED: usize = 100_000;

impl ReplayGuard {
    /// Take `signature` at `now`, remembered for `window`: `Err(answer)` if
    /// it was taken before (or the guard is full).
    fn take(
        &mut self,
        signature: &str,
        now: std::time::Instant,
        window: Duration,
    ) -> Result<(), Answer> {
        if let Some(until) = self.seen.get(signature)
            && *until > now
        {
            return Err(deny(
                401,
                "replayed request: this signature was already used (options.replay_protection)",
            ));
        }
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.retain(|_, until| *until > now);
            if self.seen.len() >= MAX_REMEMBERED {
                return Err(deny(
                    503,
                    "too many signed requests within timestamp_delta_limit to remember: try again later",
                ));
            }
        }
        self.seen.insert(signature.to_owned(), now + window);
        Ok(())
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("service", &self.service)
            .field("realm", &self.realm)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    pub fn new(
        service: Service,
        realm: String,
        role: String,
        options: BridgeOptions,
        tls: bool,
        compat: Compat,
    ) -> Bridge {
        let allowed = options.require_ip.clone();
        Bridge {
            service,
            realm,
            role,
            options,
            tls,
            compat,
            allowed,
            session: arc_swap::ArcSwapOption::empty(),
            joining: tokio::sync::Mutex::new(()),
            seen: std::sync::Mutex::default(),
        }
    }

    async fn session(&self, realms: &Realms) -> Result<Arc<LocalSession>, String> {
        let live = |s: &Option<Arc<LocalSession>>| s.as_ref().filter(|s| !s.ended()).cloned();
        if let Some(s) = live(&self.session.load()) {
            return Ok(s);
        }
        let _joining = self.joining.lock().await;
        if let Some(s) = live(&self.session.load()) {
            return Ok(s);
        }
        let realm = realms
            .get(&self.realm)
            .ok_or_else(|| format!("realm {:?} is not running", self.realm))?;
        let s = Arc::new(LocalSession::attach(&realm, "trellis.http-bridge", &self.role).await?);
        self.session.store(Some(s.clone()));
        Ok(s)
    }
}

/// An HTTP answer: status and JSON body.
pub(super) struct Answer(pub u16, pub serde_json::Value);

pub(super) fn deny(code: u16, text: impl Into<String>) -> Answer {
    Answer(
        code,
        serde_json::json!({"error": text.into(), "args": [], "kwargs": {}}),
    )
}

/// The request head's parts the bridge and long-poll need.
pub(super) struct Head {
    pub method: String,
    pub target: String,
    pub content_type: Option<String>,
    pub origin: Option<String>,
    /// Every header, lowercased names, values in order (for webhooks).
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub(super) fn of(parts: &hyper::http::request::Parts) -> Head {
        let get = |name: &str| super::http::header(&parts.headers, name).map(str::to_owned);
        Head {
            method: parts.method.as_str().to_owned(),
            target: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            content_type: get("content-type"),
            origin: get("origin"),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The first value of a header (lowercase name).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A header name in the canonical capitalization Crossbar.io's webhooks
/// publish (Twisted's: `Content-Type`, `X-Hub-Signature-256`, with its
/// exceptions such as `ETag` and `WWW-Authenticate`).
fn canonical_name(name: &str) -> String {
    let special = [
        ("content-md5", "Content-MD5"),
        ("dnt", "DNT"),
        ("etag", "ETag"),
        ("p3p", "P3P"),
        ("te", "TE"),
        ("www-authenticate", "WWW-Authenticate"),
        ("x-xss-protection", "X-XSS-Protection"),
    ];
    if let Some((_, s)) = special.iter().find(|(k, _)| *k == name) {
        return (*s).to_owned();
    }
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Serve one request on a bridge path.
pub(super) async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    conn: &super::http::Conn,
    bridge: &Bridge,
) -> hyper::Response<super::http::Body> {
    let (parts, body) = req.into_parts();
    let h = Head::of(&parts);
    let origin = h.origin.clone();
    // Behind a trusted reverse proxy, the client it names.
    let client = conn.peer.ip.map(|ip| {
        super::forwarded::client_ip(
            ip,
            h.header("forwarded"),
            h.header("x-forwarded-for"),
            &conn.settings.trusted_proxies,
        )
    });
    let refused_ip = bridge
        .allowed
        .as_ref()
        .is_some_and(|a| !client.is_some_and(|ip| a.contains(ip)));
    let answer = match h.method.as_str() {
        _ if refused_ip => deny(
            400,
            "request denied based on IP address (options.require_ip)",
        ),
        "OPTIONS" => return write(200, "", &origin, true, false),
        "POST" | "PUT" => request(&parts, body, &h, bridge, &conn.realms).await,
        _ => deny(
            405,
            format!("HTTP method {} not allowed: use POST or PUT", h.method),
        ),
    };
    // A webhook answers in plain text (its configured responses).
    let (text, plain) = match (&answer.1, bridge.service) {
        (serde_json::Value::String(text), Service::Webhook) => (text.clone(), true),
        (v, _) => (v.to_string(), false),
    };
    write(answer.0, &text, &origin, false, plain)
}

async fn request(
    parts: &hyper::http::request::Parts,
    body: hyper::body::Incoming,
    h: &Head,
    bridge: &Bridge,
    realms: &Realms,
) -> Answer {
    let o = &bridge.options;
    if o.require_tls && !bridge.tls {
        return deny(400, "this bridge path requires TLS (options.require_tls)");
    }
    if let Some(ct) = h
        .content_type
        .as_ref()
        .filter(|_| bridge.service != Service::Webhook)
    {
        let ct = ct.to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return deny(
                400,
                format!("bad or missing content type ('{ct}'): use application/json"),
            );
        }
        if ct.contains("charset=") && !ct.contains("charset=utf-8") {
            return deny(400, "the body's charset must be UTF-8");
        }
    }
    let limit = if o.post_body_limit == 0 {
        MAX_BRIDGE_BODY
    } else {
        o.post_body_limit
    };
    let body =
        match super::http::read_body(parts, body, limit, true, "options.post_body_limit").await {
            Ok(b) => b,
            Err(e) => return deny(e.0, e.1),
        };
    let Ok(text) = std::str::from_utf8(&body) else {
        return deny(400, "the body is not UTF-8");
    };
    if let (Some(key), Some(secret)) = (&o.key, &o.secret) {
        let signature = match check_signature(
            &h.target,
            key,
            secret,
            o.timestamp_delta_limit,
            text,
            SystemTime::now(),
        ) {
            Ok(sig) => sig,
            Err(a) => return a,
        };
        if o.replay_protection {
            // Twice the delta: a timestamp may be that far off either way.
            let window = Duration::from_secs(o.timestamp_delta_limit.saturating_mul(2));
            let taken = match bridge.seen.lock() {
                Ok(mut g) => g.take(&signature, std::time::Instant::now(), window),
                Err(_) => Err(deny(500, "the replay guard failed")),
            };
            if let Err(a) = taken {
                return a;
            }
        }
    }
    if bridge.service == Service::Webhook {
        return webhook(h, text, bridge, realms).await;
    }
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return deny(400, format!("the body is not JSON: {e}")),
    };
    let Some(obj) = json.as_object() else {
        return deny(400, "the body must be a JSON object");
    };
    let args: Vec<Value> = match obj.get("args") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a.iter().map(Value::from).collect(),
        Some(_) => return deny(400, "\"args\" must be a list"),
    };
    let kwargs: Dict = match obj.get("kwargs").map(Value::from) {
        None | Some(Value::Null) => Dict::new(),
        Some(Value::Dict(d)) => d,
        Some(_) => return deny(400, "\"kwargs\" must be an object"),
    };
    let payload = Payload {
        args,
        kwargs,
        ..Payload::default()
    };
    let session = match bridge.session(realms).await {
        Ok(s) => s,
        Err(e) => {
            return Answer(
                500,
                serde_json::json!({"error": "wamp.error.runtime_error", "args": [e], "kwargs": {}}),
            );
        }
    };
    let wamp_error = |e: client::CallError| {
        Answer(
            200,
            serde_json::json!({
                "error": e.uri,
                "args": Value::List(e.payload.args).to_json(),
                "kwargs": Value::Dict(e.payload.kwargs).to_json(),
            }),
        )
    };
    match bridge.service {
        Service::Publisher | Service::Webhook => {
            let Some(topic) = obj.get("topic").and_then(|t| t.as_str()) else {
                return deny(400, "missing: the body's \"topic\"");
            };
            let options = match obj.get("options").map(Value::from) {
                None | Some(Value::Null) => Dict::new(),
                Some(Value::Dict(d)) => d,
                Some(_) => return deny(400, "\"options\" must be an object"),
            };
            match session.publish_with(topic, options, payload).await {
                Ok(id) => Answer(200, serde_json::json!({"id": id})),
                Err(e) => wamp_error(e),
            }
        }
        Service::Caller => {
            let Some(procedure) = obj.get("procedure").and_then(|t| t.as_str()) else {
                return deny(400, "missing: the body's \"procedure\"");
            };
            let options = proto::dict! { "timeout" => o.timeout };
            match session.call_with(procedure, options, payload).await {
                Ok(p) => {
                    let mut out = serde_json::json!({"args": Value::List(p.args).to_json()});
                    if !p.kwargs.is_empty() {
                        out["kwargs"] = Value::Dict(p.kwargs).to_json();
                    }
                    Answer(200, out)
                }
                Err(e) => wamp_error(e),
            }
        }
    }
}

/// A webhook: the request's headers and raw body published to the
/// configured topic; 202 with `success_response`, or 500 with
/// `error_response` when the publication fails.
async fn webhook(h: &Head, body: &str, bridge: &Bridge, realms: &Realms) -> Answer {
    let o = &bridge.options;
    if let Some(secret) = &o.github_secret {
        let given = h
            .headers
            .iter()
            .find(|(k, _)| k == "x-hub-signature-256")
            .map(|(_, v)| v.as_str());
        if !github_signature_ok(secret, body.as_bytes(), given) {
            return deny(
                400,
                "invalid or missing X-Hub-Signature-256 (options.github_secret)",
            );
        }
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &h.headers {
        // Crossbar.io publishes canonical names (`Content-Type`); the
        // router's `options.compat: "spec"` lowercases them.
        let name = match bridge.compat {
            Compat::Crossbar => canonical_name(k),
            Compat::Spec => k.clone(),
        };
        if let serde_json::Value::Array(a) = headers
            .entry(name.clone())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            a.push(serde_json::Value::String(v.clone()));
        }
    }
    let event = serde_json::json!({"headers": headers, "body": body});
    let topic = o.topic.clone().unwrap_or_default();
    let published = match bridge.session(realms).await {
        Ok(s) => s
            .publish_with(
                &topic,
                Dict::new(),
                Payload::args(vec![Value::from(&event)]),
            )
            .await
            .map_err(|e| e.uri),
        Err(e) => Err(e),
    };
    match published {
        Ok(_) => Answer(202, serde_json::Value::String(o.success_response.clone())),
        Err(e) => {
            tracing::warn!(%topic, "webhook: the event could not be published: {e}");
            Answer(500, serde_json::Value::String(o.error_response.clone()))
        }
    }
}

/// GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`,
/// compared in constant time.
fn github_signature_ok(secret: &str, body: &[u8], given: Option<&str>) -> bool {
    use hmac::{KeyInit, Mac};
    let Some(hex_sig) = given.and_then(|g| g.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
    else {
        return false;
    };
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    bool::from(expected.as_bytes().ct_eq(hex_sig.trim().as_bytes()))
}

/// Crossbar.io's signed requests: `key`, `timestamp`, `seq`, `nonce` and
/// `signature` in the query string; `signature` is URL-safe base64 of
/// HMAC-SHA256(secret, key ‖ timestamp ‖ seq ‖ nonce ‖ body).
fn check_signature(
    target: &str,
    key: &str,
    secret: &str,
    delta_limit: u64,
    body: &str,
    now: SystemTime,
) -> Result<String, Answer> {
    let query: HashMap<String, String> = target
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| {
        query.get(name).cloned().ok_or_else(|| {
            deny(
                400,
                format!("signed request required, but mandatory query parameter '{name}' missing"),
            )
        })
    };
    let (k, ts, seq, nonce, sig) = (
        get("key")?,
        get("timestamp")?,
        get("seq")?,
        get("nonce")?,
        get("signature")?,
    );
    if k != key {
        return Err(deny(401, format!("unknown key '{k}' in signed request")));
    }
    if seq.parse::<u64>().is_err() || nonce.parse::<u64>().is_err() {
        return Err(deny(
            400,
            "invalid seq or nonce in signed request: integers expected",
        ));
    }
    let Some(at) = crate::time::parse_utc(&ts) else {
        return Err(deny(
            400,
            format!(
                "invalid timestamp '{ts}' (must be UTC/ISO 8601, e.g. 2011-10-14T16:59:51.123Z)"
            ),
        ));
    };
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if delta_limit > 0 && (now_s - at).abs() > delta_limit as f64 {
        return Err(deny(400, "request expired (delta too large)"));
    }
    let expected = proto::auth::cra_sign(secret.as_bytes(), &format!("{k}{ts}{seq}{nonce}{body}"))
        .replace('+', "-")
        .replace('/', "_");
    let given = sig.trim().trim_end_matches('=');
    if bool::from(
        expected
            .trim_end_matches('=')
            .as_bytes()
            .ct_eq(given.as_bytes()),
    ) {
        Ok(given.to_owned())
    } else {
        Err(deny(401, "invalid request signature"))
    }
}

/// The bridge's response: JSON (or a webhook's plain text), with the
/// headers Crossbar.io's bridge sends.
fn write(
    code: u16,
    body: &str,
    origin: &Option<String>,
    options: bool,
    plain: bool,
) -> hyper::Response<super::http::Body> {
    let ct = if plain {
        "text/plain; charset=UTF-8"
    } else {
        "application/json; charset=UTF-8"
    };
    let mut r = super::http::response(code, ct, body.to_owned());
    let methods = "POST,PUT,OPTIONS";
    super::http::uncached_cors(&mut r, origin, options.then_some(methods));
    if options {
        super::http::set(&mut r, "allow", methods);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures() {
        // GitHub's documented example: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = "It's a Secret to Everybody";
        assert!(github_signature_ok(secret, b"Hello, World!", Some(sig)));
        assert!(!github_signature_ok(secret, b"Hello, World?", Some(sig)));
        assert!(!github_signature_ok("other", b"Hello, World!", Some(sig)));
        assert!(!github_signature_ok(secret, b"Hello, World!", None));
        assert!(!github_signature_ok(
            secret,
            b"Hello, World!",
            Some("sha1=abc")
        ));
    }

    /// Crossbar.io's client: URL-safe base64 with padding.
    fn sign(secret: &str, key: &str, ts: &str, seq: &str, nonce: &str, body: &str) -> String {
        proto::auth::cra_sign(secret.as_bytes(), &format!("{key}{ts}{seq}{nonce}{body}"))
            .replace('+', "-")
            .replace('/', "_")
    }

    #[test]
    fn signatures_padded_or_not_wrong_or_stale() {
        let now = UNIX_EPOCH + Duration::from_secs(1_318_611_600);
        let ts = "2011-10-14T16:59:51.123Z";
        let body = r#"{"topic": "com.x"}"#;
        let sig = sign("s3cret", "k", ts, "1", "77", body);
        assert!(sig.ends_with('='), "{sig}");
        let target =
            |sig: &str| format!("/pub?key=k&timestamp={ts}&seq=1&nonce=77&signature={sig}");
        let check = |t: &str, body: &str| {
            check_signature(t, "k", "s3cret", 300, body, now)
                .map(|_| ())
                .map_err(|a| a.0)
        };
        assert_eq!(check(&target(&sig), body), Ok(()));
        assert_eq!(
            check(&target(sig.trim_end_matches('=')), body),
            Ok(()),
            "unpadded"
        );
        assert_eq!(
            check(&target(&sig.replace('=', "%3D")), body),
            Ok(()),
            "percent-encoded"
        );
        assert_eq!(
            check(&target(&sig), r#"{"topic": "com.y"}"#),
            Err(401),
            "another body"
        );
        assert_eq!(check(&target("AAAA"), body), Err(401));
        assert_eq!(check("/pub?key=k", body), Err(400), "parameters missing");
        assert_eq!(
            check_signature(&target(&sig), "other", "s3cret", 300, body, now)
                .map(|_| ())
                .map_err(|a| a.0),
            Err(401),
            "unknown key"
        );
        let late = now + Duration::from_secs(3600);
        assert_eq!(
            check_signature(&target(&sig), "k", "s3cret", 300, body, late)
                .map(|_| ())
                .map_err(|a| a.0),
            Err(400),
            "expired"
        );
        // Padded or not, it is one signature (for the replay guard).
        assert_eq!(
            check_signature(&target(&sig), "k", "s3cret", 300, body, now).map_err(|a| a.0),
            check_signature(
                &target(sig.trim_end_matches('=')),
                "k",
                "s3cret",
                300,
                body,
                now
            )
            .map_err(|a| a.0)
        );
    }

    #[test]
    fn a_signature_is_taken_once_within_its_window() {
        let mut g = ReplayGuard::default();
        let t0 = std::time::Instant::now();
        let w = Duration::from_secs(600);
        assert!(g.take("sig-a", t0, w).is_ok());
        let again = g.take("sig-a", t0 + Duration::from_secs(599), w);
        assert_eq!(again.map_err(|a| a.0), Err(401), "a replay");
        assert!(g.take("sig-b", t0, w).is_ok(), "another signature");
        // After the window the timestamp check refuses it anyway; the
        // guard may forget it.
        assert!(g.take("sig-a", t0 + Duration::from_secs(601), w).is_ok());
        // Full of live entries: refused, not forgotten.
        let mut g = ReplayGuard::default();
        for i in 0..MAX_REMEMBERED {
            g.seen.insert(format!("s{i}"), t0 + w);
        }
        assert_eq!(g.take("new", t0, w).map_err(|a| a.0), Err(503));
        // Expired ones make room.
        assert!(g.take("new", t0 + w + Duration::from_secs(1), w).is_ok());
        assert_eq!(g.seen.len(), 1);
    }
}
