//! Built-in components that container workers host, chosen in node.json by
//! `classname`.

use std::sync::Arc;

use proto::client::{CallError, Client};
use proto::component::{BoxFuture, Component};
use proto::{Payload, Value};

/// Every built-in `classname`.
pub const CLASSNAMES: &[&str] = &["trellis.balloon.Backend"];

/// The component for `classname` (validated beforehand).
pub fn build(classname: &str) -> Option<Arc<dyn Component>> {
    match classname {
        "trellis.balloon.Backend" => Some(Arc::new(BalloonBackend)),
        _ => None,
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
        for name in CLASSNAMES {
            assert!(build(name).is_some());
        }
    }
}
