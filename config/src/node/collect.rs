//! Every structural problem of a config in one run.
//!
//! serde stops at the first error. [`deserialize_all`] records it, takes
//! the offending part out of the JSON value and tries again, until the
//! value deserializes or nothing more can be taken out. Paths are reported
//! as in the file: an array element taken out does not shift the indices
//! of the later ones. An error that only follows from an earlier removal
//! (a required key removed for its wrong type is now "missing") is not
//! reported again; the object that lacks it is taken out instead.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::ConfigError;

/// Rounds at most: a config with more problems than this reports these.
const MAX_ROUNDS: usize = 200;

/// One step of a path, in the value as it is now.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Deserialize `value` as `T`. On success with no problem, the value; with
/// problems, each is added to `errors` (under `prefix`) and `None` is
/// returned, so no semantic check runs on a partial config.
pub fn deserialize_all<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // Array elements taken out, by the array's path in the file's terms.
    let mut removed: Vec<(Vec<Step>, usize)> = Vec::new();
    // Keys taken out for a wrong value: (object path, key), in file terms.
    let mut taken_keys: Vec<(Vec<Step>, String)> = Vec::new();
    let mut failed = false;
    for _ in 0..MAX_ROUNDS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return (!failed).then_some(t),
            Err(e) => e,
        };
        failed = true;
        let steps: Vec<Step> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(Step::Index(*index)),
                Segment::Map { key } => Some(Step::Key(key.clone())),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let mut message = unsupported(&err.inner().to_string());
        let mut steps = steps;
        // A key of an object whose `type` Trellis does not have (a
        // `resource` web service's `classname`): the type is the problem,
        // named once, and the whole object goes.
        if message.starts_with("unknown field `")
            && let Some((_, parent)) = steps.split_last()
            && let Some(kind) = at(&value, parent)
                .and_then(|o| o.get("type"))
                .and_then(Value::as_str)
            && let Some(why) = crate::unsupported::variant(kind)
        {
            message = why;
            let mut at_type = parent.to_vec();
            at_type.push(Step::Key("type".into()));
            let original = to_original(&at_type, &removed);
            errors.push(ConfigError {
                path: render(prefix, &original),
                message,
            });
            steps.truncate(parent.len());
            let original = to_original(&steps, &removed);
            if steps.is_empty() || !take_out(&mut value, &steps, &mut removed, &original) {
                return None;
            }
            continue;
        }
        let original = to_original(&steps, &removed);
        let knock_on = missing_field(&message).is_some_and(|field| {
            taken_keys
                .iter()
                .any(|(at, key)| *at == original && key == field)
        });
        if !knock_on {
            errors.push(ConfigError {
                path: render(prefix, &original),
                message,
            });
        }
        // Take out what the path names: the key or element at fault, or,
        // for an object that lacks a key, the object itself.
        if steps.is_empty() {
            return None;
        }
        if let (Some(Step::Key(k)), Some((_, at))) = (steps.last(), original.split_last()) {
            taken_keys.push((at.to_vec(), k.clone()));
        }
        if !take_out(&mut value, &steps, &mut removed, &original) {
            return None;
        }
    }
    None
}

/// A serde message, with Crossbar.io's keys and values that Trellis does
/// not have named as such ([`crate::unsupported`]) instead of as a typo
/// with a list of expected keys.
fn unsupported(message: &str) -> String {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
    };
    quoted("unknown field `")
        .and_then(crate::unsupported::field)
        .or_else(|| quoted("unknown variant `").and_then(crate::unsupported::variant))
        .unwrap_or_else(|| message.to_owned())
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// The path in the file's terms: each index shifted past the elements of
/// its array taken out before it.
fn to_original(steps: &[Step], removed: &[(Vec<Step>, usize)]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for s in steps {
        match s {
            Step::Key(k) => out.push(Step::Key(k.clone())),
            Step::Index(i) => {
                let mut gone: Vec<usize> = removed
                    .iter()
                    .filter(|(at, _)| *at == out)
                    .map(|(_, i)| *i)
                    .collect();
                gone.sort_unstable();
                let mut idx = *i;
                for g in gone {
                    if g <= idx {
                        idx += 1;
                    }
                }
                out.push(Step::Index(idx));
            }
        }
    }
    out
}

/// Take out the node at `steps` (current terms); `original` is the same
/// path in file terms, kept for array elements. For a path that names an
/// object (a missing key, a rule its parts break together), the object
/// goes. False when there is nothing to take.
fn take_out(
    value: &mut Value,
    steps: &[Step],
    removed: &mut Vec<(Vec<Step>, usize)>,
    original: &[Step],
) -> bool {
    let Some((last, parent)) = steps.split_last() else {
        return false;
    };
    let mut node = value;
    for s in parent {
        node = match (s, node) {
            (Step::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Step::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Step::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            if let Some((Step::Index(orig), at)) = original.split_last() {
                removed.push((at.to_vec(), *orig));
            }
            true
        }
        _ => false,
    }
}

/// The node at `steps` in `value`, if there is one.
fn at<'a>(value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps.iter().try_fold(value, |node, s| match (s, node) {
        (Step::Key(k), Value::Object(m)) => m.get(k),
        (Step::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

/// `prefix` + `realms[0].roles[1].name`.
fn render(prefix: &str, steps: &[Step]) -> String {
    let mut out = prefix.to_owned();
    for s in steps {
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterConfig;

    #[test]
    fn every_structural_problem_once_with_the_file_s_paths() {
        let v: Value = serde_json::from_str(
            r#"{
              "realms": [{"name": "realm1", "rolez": [], "roles": [{"name": "a", "permissions": [
                  {"uri": "x", "call": true, "allow": {"call": true}},
                  {"uri": "y", "match": "sometimes"}]}]}],
              "transports": [
                {"type": "websocket", "endpoint": {"type": "tcp", "port": "80"}},
                {"type": "websocketz", "endpoint": {"type": "tcp", "port": 81}},
                {"type": "rawsocket", "endpoint": {"type": "tcp", "port": 82}, "colour": "red"},
                {"type": "rawsocket"}
              ]
            }"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        let r: Option<RouterConfig> = deserialize_all(v, "workers[0]", &mut errors);
        assert!(r.is_none());
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        let paths: Vec<&str> = got.iter().map(|(p, _)| *p).collect();
        for want in [
            "workers[0].realms[0].rolez",
            "workers[0].realms[0].roles[0].permissions[0]",
            "workers[0].realms[0].roles[0].permissions[1].match",
            "workers[0].transports[0].endpoint.port",
            "workers[0].transports[1].type",
            "workers[0].transports[2].colour",
            "workers[0].transports[3]",
        ] {
            assert_eq!(
                paths.iter().filter(|p| **p == want).count(),
                1,
                "{want} once in {got:#?}"
            );
        }
        assert_eq!(paths.len(), 7, "no knock-on lines: {got:#?}");
        assert!(
            !got.iter()
                .any(|(p, m)| m.contains("missing field `type`") && p.ends_with("[1]")),
            "a bad type is not reported again as missing: {got:#?}"
        );
    }

    #[test]
    fn a_clean_value_deserializes() {
        let mut errors = Vec::new();
        let r: Option<RouterConfig> = deserialize_all(
            serde_json::json!({"transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 1}}]}),
            "",
            &mut errors,
        );
        assert!(r.is_some() && errors.is_empty(), "{errors:?}");
    }

    /// crossbar-examples' benchmark/web: a `resource` web service's keys
    /// come before its `type`; the type is named once, not its keys as
    /// typos.
    #[test]
    fn the_keys_of_an_unsupported_type_are_not_typos() {
        let v: Value = serde_json::from_str(
            r#"{"transports": [{"type": "web", "endpoint": {"type": "tcp", "port": 8080},
                 "paths": {"r": {"classname": "myresource.MyResource", "extra": {}, "type": "resource"},
                           "j": {"type": "json", "value": 1, "bogus": 1}}}]}"#,
        )
        .expect("json");
        let mut errors = Vec::new();
        assert!(deserialize_all::<RouterConfig>(v, "workers[0]", &mut errors).is_none());
        let got: Vec<(&str, bool)> = errors
            .iter()
            .map(|e| {
                (
                    e.path.as_str(),
                    e.message.contains("not supported by Trellis"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("workers[0].transports[0].paths.j.bogus", false),
                ("workers[0].transports[0].paths.r.type", true)
            ],
            "{errors:?}"
        );
    }
}
