//! Built-in components, chosen in node.json by `classname`: container
//! components ([`trellis_config::component::CLASSNAMES`]) and router
//! components ([`trellis_config::component::ROUTER_CLASSNAMES`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use client::component::{BoxFuture, Component};
use client::{CallError, Client};
use proto::{Dict, Payload, Value};

use trellis_config::component::UserDatabaseConfig;
use trellis_config::router::{RouterComponentConfig, SecretKind};

/// The component for `classname` (validated beforehand).
pub fn build(classname: &str) -> Option<Arc<dyn Component>> {
    match classname {
        "trellis.balloon.Backend" => Some(Arc::new(BalloonBackend)),
        _ => None,
    }
}

/// Start a router component on its in-memory session.
///
/// # Errors
/// Its settings are wrong or its users file cannot be read.
pub async fn start_router_component(
    c: &RouterComponentConfig,
    session: &Client,
) -> Result<(), String> {
    let cfg =
        UserDatabaseConfig::from_extra(c.extra.as_ref()).map_err(|(k, m)| format!("{k}: {m}"))?;
    let db = UserDatabase::load(cfg)?;
    db.start(session).await.map_err(|e| e.to_string())
}

/// One user of the database: the router's WAMP-CRA user record, which
/// is also what its dynamic WAMP-CRA expects back from an authenticator.
pub use trellis_config::router::CraUser as User;

/// `trellis.auth.UserDatabase`: a dynamic authenticator over a user
/// database, answering both WAMP-CRA (secret and salt for the router to
/// check) and ticket (checked here) logins.
pub struct UserDatabase {
    procedure: String,
    users: BTreeMap<String, User>,
}

impl UserDatabase {
    /// Inline users plus the users file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn load(cfg: UserDatabaseConfig) -> Result<UserDatabase, String> {
        let mut users = cfg.users;
        if let Some(file) = &cfg.users_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read users_file {file:?}: {e}"))?;
            let more: BTreeMap<String, User> = serde_json::from_str(&text)
                .map_err(|e| format!("users_file {file:?} is not a JSON object of users: {e}"))?;
            users.extend(more);
        }
        Ok(UserDatabase {
            procedure: cfg.procedure,
            users,
        })
    }

    /// Register the authenticator procedure.
    ///
    /// # Errors
    /// The registration failed.
    pub async fn start(self, session: &Client) -> Result<(), CallError> {
        let db = Arc::new(self);
        let procedure = db.procedure.clone();
        session
            .register(&procedure, move |p: Payload, _| {
                let db = db.clone();
                async move { db.authenticate(&p) }
            })
            .await?;
        Ok(())
    }

    /// `authenticate(realm, authid, details)`.
    fn authenticate(&self, p: &Payload) -> Result<Payload, CallError> {
        let authid = p.args.get(1).and_then(Value::as_str).unwrap_or_default();
        let details = p.args.get(2).and_then(Value::as_dict);
        let method = details
            .and_then(|d| d.get("authmethod"))
            .and_then(Value::as_str)
            .unwrap_or("wampcra");
        let Some(user) = self.users.get(authid) else {
            return Err(CallError::new(
                "wamp.error.not_authorized",
                format!("no user {authid:?}"),
            ));
        };
        let mut answer = Dict::new();
        answer.insert("role".into(), user.role.as_str().into());
        if let Some(a) = &user.authid {
            answer.insert("authid".into(), a.as_str().into());
        }
        if let Some(e) = &user.extra {
            answer.insert("extra".into(), Value::from(e));
        }
        if let Some(r) = &user.realm {
            answer.insert("realm".into(), r.as_str().into());
        }
        match method {
            "ticket" => {
                let ticket = details
                    .and_then(|d| d.get("ticket"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let presented = match (&user.salt, user.secret_kind) {
                    (Some(salt), SecretKind::DerivedKey) => proto::auth::derive_key(
                        ticket,
                        salt,
                        user.iterations.unwrap_or(1000),
                        user.keylen.unwrap_or(32) as usize,
                    ),
                    _ => ticket.to_owned(),
                };
                use subtle::ConstantTimeEq;
                if !bool::from(presented.as_bytes().ct_eq(user.secret.as_bytes())) {
                    return Err(CallError::new("wamp.error.not_authorized", "wrong ticket"));
                }
            }
            _ => {
                answer.insert("secret".into(), user.secret.as_str().into());
                if let Some(s) = &user.salt {
                    answer.insert("salt".into(), s.as_str().into());
                }
                if let Some(i) = user.iterations {
                    answer.insert("iterations".into(), u64::from(i).into());
                }
                if let Some(k) = user.keylen {
                    answer.insert("keylen".into(), u64::from(k).into());
                }
                if user.secret_kind != SecretKind::Password {
                    answer.insert("secret-kind".into(), user.secret_kind.name().into());
                }
            }
        }
        Ok(Payload::args(vec![Value::Dict(answer)]))
    }
}

/// The balloon example's backend: `com.balloon.pop(x, y) -> x + y`.
pub struct BalloonBackend;

fn number(p: &Payload, i: usize) -> Result<Value, CallError> {
    match p.args.get(i) {
        Some(v @ (Value::Int(_) | Value::UInt(_) | Value::Float(_))) => Ok(v.clone()),
        Some(other) => Err(CallError::new(
            "wamp.error.invalid_argument",
            format!(
                "com.balloon.pop(x, y) takes two numbers; argument {} is a {}",
                i + 1,
                other.type_name()
            ),
        )),
        None => Err(CallError::new(
            "wamp.error.invalid_argument",
            "com.balloon.pop(x, y) takes two numbers",
        )),
    }
}

/// `x + y` for WAMP numbers: integers stay integers while they fit.
pub fn add(x: &Value, y: &Value) -> Value {
    let as_i128 = |v: &Value| match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    };
    let as_f64 = |v: &Value| match v {
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Float(f) => *f,
        _ => 0.0,
    };
    match (as_i128(x), as_i128(y)) {
        (Some(a), Some(b)) => {
            let s = a + b;
            if let Ok(i) = i64::try_from(s) {
                Value::Int(i)
            } else if let Ok(u) = u64::try_from(s) {
                Value::UInt(u)
            } else {
                Value::Float(s as f64)
            }
        }
        _ => Value::Float(as_f64(x) + as_f64(y)),
    }
}

impl Component for BalloonBackend {
    fn on_join<'a>(&'a self, session: &'a Client) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            session
                .register("com.balloon.pop", |p: Payload, _| async move {
                    let (x, y) = (number(&p, 0)?, number(&p, 1)?);
                    Ok(Payload::args(vec![add(&x, &y)]))
                })
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_adds_numbers_and_refuses_the_rest() {
        assert_eq!(add(&Value::Int(2), &Value::Int(3)), Value::Int(5));
        assert_eq!(add(&Value::Int(-2), &Value::UInt(3)), Value::Int(1));
        assert_eq!(add(&Value::Float(0.5), &Value::Int(1)), Value::Float(1.5));
        assert_eq!(
            add(&Value::UInt(u64::MAX), &Value::Int(0)),
            Value::UInt(u64::MAX)
        );
        let p = Payload::args(vec![Value::Int(1), Value::from("x")]);
        let e = number(&p, 1).unwrap_err();
        assert_eq!(e.uri, "wamp.error.invalid_argument");
        assert!(e.to_string().contains("argument 2 is a"), "{e}");
        assert!(number(&Payload::default(), 0).is_err());
        for name in trellis_config::component::CLASSNAMES {
            assert!(build(name).is_some());
        }
    }
}
