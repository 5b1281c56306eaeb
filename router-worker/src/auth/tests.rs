//! Each method through [`AuthSettings`]: HELLO in, welcome or challenge
//! out, AUTHENTICATE in, principal or refusal out. The realms are real
//! actors (no sockets).

use std::sync::Arc;

use proto::errors::uri as wamp_uri;
use proto::message::{Authenticate, Hello as HelloMsg};
use proto::{Dict, Value, dict};

use super::*;
use crate::realms::RealmTable;
use trellis_config::router::{RealmConfig, TransportConfig};

async fn realms() -> crate::realms::Realms {
    let cfg: RealmConfig = serde_json::from_str(
        r#"{"name": "realm1", "roles": [{"name": "user"}, {"name": "anonymous"}]}"#,
    )
    .unwrap();
    let table = Arc::new(RealmTable::default());
    table.apply(&[], &[cfg]).await.unwrap();
    table
}

fn settings(auth: serde_json::Value) -> AuthSettings {
    let t: TransportConfig = serde_json::from_value(serde_json::json!({
        "type": "rawsocket",
        "endpoint": {"type": "tcp", "port": 0},
        "auth": auth,
    }))
    .unwrap();
    AuthSettings::from_config(&t, None)
}

/// What a client's link passes authentication (session 5, no counters).
fn client_ctx<'a>(realms: &'a crate::realms::Realms, transport: &'a Dict) -> Context<'a> {
    Context {
        realms,
        session: 5,
        transport,
        internal: false,
        latency: None,
        cookie: None,
    }
}

fn hello(details: Dict) -> HelloMsg {
    HelloMsg {
        realm: "realm1".into(),
        details,
    }
}

fn methods(list: &[&str]) -> Value {
    Value::List(list.iter().map(|m| Value::from(*m)).collect())
}

async fn challenge(
    s: &AuthSettings,
    realms: &crate::realms::Realms,
    details: Dict,
) -> (proto::message::Challenge, PendingAuth) {
    let transport = Dict::new();
    let ctx = client_ctx(realms, &transport);
    match s.hello(&hello(details), &ctx).await {
        Ok(Outcome::Challenge(c, p)) => (c, p),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

async fn answer(
    s: &AuthSettings,
    realms: &crate::realms::Realms,
    pending: PendingAuth,
    signature: &str,
) -> Result<Principal, Refusal> {
    let transport = Dict::new();
    let ctx = client_ctx(realms, &transport);
    let a = Authenticate {
        signature: signature.into(),
        extra: Dict::new(),
    };
    s.authenticate(pending, &a, &ctx).await
}

#[tokio::test]
async fn static_ticket_in_constant_time_and_without_telling_who_exists() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "ticket": {"type": "static", "principals": {"joe": {"ticket": "s3cret", "role": "user"}}}
    }));
    let d = || dict! { "authmethods" => methods(&["ticket"]), "authid" => "joe" };
    let (c, p) = challenge(&s, &realms, d()).await;
    assert_eq!(c.authmethod, "ticket");
    let who = answer(&s, &realms, p, "s3cret").await.unwrap();
    assert_eq!(
        (
            who.authid.as_str(),
            who.authrole.as_str(),
            who.authprovider.as_str()
        ),
        ("joe", "user", "static")
    );
    let (_, p) = challenge(&s, &realms, d()).await;
    let wrong = answer(&s, &realms, p, "guess").await.unwrap_err();
    assert!(wrong.counts && wrong.reason == wamp_uri::AUTHENTICATION_FAILED);
    assert!(!wrong.message.contains("guess"), "no secret in the message");
    let (_, p) = challenge(
        &s,
        &realms,
        dict! { "authmethods" => methods(&["ticket"]), "authid" => "nobody" },
    )
    .await;
    let unknown = answer(&s, &realms, p, "s3cret").await.unwrap_err();
    assert_eq!(
        unknown.message.replace("nobody", "joe"),
        wrong.message,
        "an unknown authid fails like a wrong ticket"
    );
}

#[tokio::test]
async fn wampcra_with_a_salted_secret() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "wampcra": {"type": "static", "users": {"ann": {"secret": "pw", "role": "user",
                    "salt": "salt123", "iterations": 100, "keylen": 16}}}
    }));
    let (c, p) = challenge(
        &s,
        &realms,
        dict! { "authmethods" => methods(&["wampcra"]), "authid" => "ann" },
    )
    .await;
    assert_eq!(c.extra.get("iterations"), Some(&Value::Int(100)));
    let text = c.extra.get("challenge").and_then(Value::as_str).unwrap();
    let key = proto::auth::derive_key("pw", "salt123", 100, 16);
    let sig = proto::auth::cra_sign(key.as_bytes(), text);
    let who = answer(&s, &realms, p, &sig).await.unwrap();
    assert_eq!(
        (who.authid.as_str(), who.authmethod.as_str()),
        ("ann", "wampcra")
    );
    let (_, p) = challenge(
        &s,
        &realms,
        dict! { "authmethods" => methods(&["wampcra"]), "authid" => "ann" },
    )
    .await;
    assert!(
        answer(&s, &realms, p, &sig).await.is_err(),
        "a replayed signature fails"
    );
}

#[tokio::test]
async fn cryptosign_signs_the_challenge_with_the_named_key() {
    let realms = realms().await;
    let seed = [7u8; 32];
    let pubkey = proto::auth::cryptosign_pubkey(&seed);
    let s = settings(serde_json::json!({
        "cryptosign": {"type": "static", "principals": {"kim": {"authorized_keys": [pubkey], "role": "user"}}}
    }));
    let d = dict! { "authmethods" => methods(&["cryptosign"]), "authextra" => dict! { "pubkey" => pubkey.as_str() } };
    let (c, p) = challenge(&s, &realms, d).await;
    let hex_challenge = c.extra.get("challenge").and_then(Value::as_str).unwrap();
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_challenge, &mut bytes).unwrap();
    let sig = proto::auth::cryptosign_sign(&seed, &bytes);
    assert_eq!(answer(&s, &realms, p, &sig).await.unwrap().authid, "kim");
}

#[tokio::test]
async fn anonymous_gets_an_authid_the_client_did_not_choose() {
    let realms = realms().await;
    let s = settings(serde_json::json!({"anonymous": {"type": "static", "role": "anonymous"}}));
    let transport = Dict::new();
    let ctx = client_ctx(&realms, &transport);
    let out = s
        .hello(&hello(dict! { "authid" => "admin" }), &ctx)
        .await
        .unwrap();
    let Outcome::Welcome(p) = out else {
        panic!("anonymous is welcomed at once")
    };
    assert_ne!(p.authid, "admin");
    assert_eq!(p.authid.len(), 29, "{}", p.authid);
    assert_eq!(p.authrole, "anonymous");
}

#[tokio::test]
async fn the_offered_methods_are_matched_against_the_enabled_ones() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "anonymous": {"type": "static", "role": "anonymous"},
        "ticket": {"type": "static", "principals": {}},
        "cryptosign": {"type": "static", "principals": {}}
    }));
    assert_eq!(s.enabled(), ["anonymous", "ticket", "cryptosign"]);
    let transport = Dict::new();
    let ctx = client_ctx(&realms, &transport);
    let r = s
        .hello(
            &hello(dict! { "authmethods" => methods(&["wampcra", "scram"]) }),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(r.reason, wamp_uri::NO_AUTH_METHOD);
    assert!(
        r.message.contains("(wampcra, scram)")
            && r.message.contains("accepts: anonymous, ticket, cryptosign"),
        "{}",
        r.message
    );
    let r = s
        .hello(&hello(dict! { "authmethods" => "ticket" }), &ctx)
        .await
        .unwrap_err();
    assert_eq!(r.reason, wamp_uri::PROTOCOL_VIOLATION);
    assert!(r.message.contains("authmethods must be a list of strings"));
    let r = s
        .hello(&hello(dict! { "authid" => "" }), &ctx)
        .await
        .unwrap_err();
    assert!(r.message.contains("authid must be a non-empty string"));
}

#[tokio::test]
async fn a_role_the_realm_lacks_is_refused_by_name() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "ticket": {"type": "static", "principals": {"joe": {"ticket": "t", "role": "admin"}}}
    }));
    let (_, p) = challenge(
        &s,
        &realms,
        dict! { "authmethods" => methods(&["ticket"]), "authid" => "joe" },
    )
    .await;
    let r = answer(&s, &realms, p, "t").await.unwrap_err();
    assert_eq!(r.reason, wamp_uri::NO_SUCH_ROLE);
    assert!(r.message.contains("\"admin\""), "{}", r.message);
}

#[tokio::test]
async fn a_static_wampcra_user_may_rename_itself_and_carry_extra() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "wampcra": {"type": "static", "users": {"login": {"secret": "pw", "role": "user",
                    "authid": "ID-17", "extra": {"team": "blue"}}}}
    }));
    let (c, p) = challenge(
        &s,
        &realms,
        dict! { "authmethods" => methods(&["wampcra"]), "authid" => "login" },
    )
    .await;
    let text = c.extra.get("challenge").and_then(Value::as_str).unwrap();
    let sig = proto::auth::cra_sign(b"pw", text);
    let who = answer(&s, &realms, p, &sig).await.unwrap();
    assert_eq!(who.authid, "ID-17");
    assert_eq!(who.extra.get("team"), Some(&Value::from("blue")));
}

#[tokio::test]
async fn anonymous_with_a_realm_joins_only_that_realm() {
    let realms = realms().await;
    let s = settings(serde_json::json!({
        "anonymous": {"type": "static", "role": "anonymous", "realm": "realm1"}
    }));
    let transport = Dict::new();
    let ctx = client_ctx(&realms, &transport);
    let nameless = HelloMsg {
        realm: String::new(),
        details: Dict::new(),
    };
    match s.hello(&nameless, &ctx).await {
        Ok(Outcome::Welcome(p)) => assert_eq!(p.realm, "realm1", "a HELLO without realm joins it"),
        other => panic!("{other:?}"),
    }
    let elsewhere = HelloMsg {
        realm: "realm2".into(),
        details: Dict::new(),
    };
    let r = s.hello(&elsewhere, &ctx).await.unwrap_err();
    assert_eq!(r.reason, wamp_uri::NO_SUCH_REALM);
    assert!(
        r.message.contains("may only join realm \"realm1\""),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn internal_realms_exist_only_for_private_links() {
    let cfg: RealmConfig = serde_json::from_str(
        r#"{"name": "trellis.internal.functions", "roles": [{"name": "anonymous"}]}"#,
    )
    .unwrap();
    let realms = Arc::new(RealmTable::default());
    realms.apply(&[], &[cfg]).await.unwrap();
    let principal = || Principal {
        authid: "x".into(),
        authrole: "anonymous".into(),
        authmethod: "ticket".into(),
        authprovider: "dynamic".into(),
        realm: "trellis.internal.functions".into(),
        extra: Dict::new(),
    };
    let transport = Dict::new();
    let mut ctx = client_ctx(&realms, &transport);
    // Whatever an authenticator assigns, a client's link sees no such realm.
    let r = admit(&ctx, principal(), "an authenticator").unwrap_err();
    assert_eq!(r.reason, wamp_uri::NO_SUCH_REALM);
    assert!(r.message.contains("does not exist"), "{}", r.message);
    ctx.internal = true;
    assert!(admit(&ctx, principal(), "the private link").is_ok());
}

#[tokio::test]
async fn a_cookie_welcomes_its_principal_and_its_refusal_does_not_count() {
    let realms = realms().await;
    let s = settings(
        serde_json::json!({"cookie": {}, "ticket": {"type": "static", "principals": {
        "joe": {"ticket": "t-123", "role": "user"}}}}),
    );
    let transport = Dict::new();
    let offer = |list: &[&str]| hello(dict! { "authmethods" => methods(list), "authid" => "joe" });
    // No login yet: refused without counting; with ticket offered too, the
    // ticket takes over.
    let ctx = client_ctx(&realms, &transport);
    let Err(r) = s.hello(&offer(&["cookie"]), &ctx).await else {
        panic!("a cookie that never logged in was welcomed");
    };
    assert!(
        !r.counts && r.message.contains("has not logged in"),
        "{r:?}"
    );
    assert!(matches!(
        s.hello(&offer(&["cookie", "ticket"]), &ctx).await,
        Ok(Outcome::Challenge(..))
    ));
    // Remembered: welcomed at once, by the method it logged in by.
    let login = |authid: &str| crate::cookies::CookieLogin {
        authid: authid.into(),
        authrole: "user".into(),
        authmethod: "ticket".into(),
        authprovider: "static".into(),
        realm: "realm1".into(),
    };
    let mut ctx = client_ctx(&realms, &transport);
    ctx.cookie = Some(login("joe"));
    match s.hello(&offer(&["cookie", "ticket"]), &ctx).await {
        Ok(Outcome::Welcome(p)) => assert_eq!(
            (
                p.authid.as_str(),
                p.authmethod.as_str(),
                p.authprovider.as_str()
            ),
            ("joe", "ticket", "cookie")
        ),
        other => panic!("{other:?}"),
    }
    // Revoked: a principal the config no longer has.
    ctx.cookie = Some(login("ann"));
    let Err(r) = s.hello(&offer(&["cookie"]), &ctx).await else {
        panic!("a revoked principal's cookie was welcomed");
    };
    assert!(
        r.message
            .contains("principal \"ann\" is no longer configured for ticket"),
        "{r:?}"
    );
}
