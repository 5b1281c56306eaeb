//! Reading a config: the file as a JSON value (JSON with `//` line
//! comments, or YAML through serde-saphyr, a pure-Rust parser), and the
//! `TRELLIS__…` environment overrides merged into it.

use std::path::Path;

use serde_json::Value;

use super::ConfigError;

/// The prefix of environment overrides: `TRELLIS__CONTROLLER__ID=node7`.
pub const ENV_PREFIX: &str = "TRELLIS__";

/// A YAML file's name (`.yaml`, `.yml`), as Crossbar.io's `config.yaml`.
pub fn is_yaml(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Parse a config's text: YAML when `yaml`, else JSON with `//` line
/// comments (as `trellis init` writes them).
///
/// # Errors
/// The parser's message, with line and column.
pub fn parse(text: &str, yaml: bool) -> Result<Value, String> {
    if yaml {
        serde_saphyr::from_str::<Value>(text).map_err(|e| format!("not valid YAML: {e}"))
    } else {
        serde_json::from_str::<Value>(&super::strip_line_comments(text))
            .map_err(|e| format!("not valid JSON: {e}"))
    }
}

/// An override's value: `true`/`false`, a number, else the text.
fn scalar(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// Merge `TRELLIS__A__B__C=value` overrides from `vars` into `config`:
/// keys lower-cased, numeric segments index arrays
/// (`TRELLIS__WORKERS__0__TRANSPORTS__0__ENDPOINT__PORT=9000`). An
/// override that names a missing array element, or goes through a value
/// that is not an object or array, is a problem naming the variable.
pub fn apply_env(
    config: &mut Value,
    vars: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<ConfigError>,
) {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, text) in vars {
        let keys: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if keys.iter().any(String::is_empty) {
            problems.push(ConfigError {
                path: String::new(),
                message: format!(
                    "environment variable {name}: an empty key; write TRELLIS__SECTION__KEY=value"
                ),
            });
            continue;
        }
        if let Err(why) = set(config, &keys, scalar(&text)) {
            problems.push(ConfigError {
                path: String::new(),
                message: format!("environment variable {name}: {why}"),
            });
        }
    }
}

fn set(node: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let Some((key, rest)) = keys.split_first() else {
        *node = value;
        return Ok(());
    };
    match node {
        Value::Object(map) => {
            let child = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            set(child, rest, value)
        }
        Value::Array(items) => {
            let len = items.len();
            let i: usize = key
                .parse()
                .map_err(|_| format!("{key:?} is not an index into a list of {len}"))?;
            let child = items
                .get_mut(i)
                .ok_or_else(|| format!("index {i} is past the end of a list of {len}"))?;
            set(child, rest, value)
        }
        other => Err(format!(
            "{key:?} goes through a {} value",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                _ => "string",
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_commented_json_parse_to_the_same_value() {
        let y = parse(
            "version: 2\nworkers:\n  - type: router\n    realms: []\n",
            true,
        )
        .unwrap();
        let j = parse("{\n// a comment\n\"version\": 2, \"workers\": [{\"type\": \"router\", \"realms\": []}]}", false).unwrap();
        assert_eq!(y, j);
        assert!(
            parse("a: [1, 2\nb: 3", true)
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            parse("{\"a\": }", false)
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn environment_overrides_set_keys_and_array_elements() {
        let mut c = json!({"version": 2, "workers": [{"type": "router", "transports": [
            {"endpoint": {"port": 8080}}]}]});
        let mut problems = Vec::new();
        apply_env(
            &mut c,
            [
                ("TRELLIS__CONTROLLER__ID".to_owned(), "node7".to_owned()),
                (
                    "TRELLIS__WORKERS__0__TRANSPORTS__0__ENDPOINT__PORT".to_owned(),
                    "9000".to_owned(),
                ),
                (
                    "TRELLIS__WORKERS__0__OPTIONS__DEBUG".to_owned(),
                    "true".to_owned(),
                ),
                ("TRELLIS__WORKERS__3__ID".to_owned(), "x".to_owned()),
                ("TRELLIS__VERSION__X".to_owned(), "1".to_owned()),
                ("OTHER__X".to_owned(), "1".to_owned()),
            ],
            &mut problems,
        );
        assert_eq!(c["controller"]["id"], "node7");
        assert_eq!(c["workers"][0]["transports"][0]["endpoint"]["port"], 9000);
        assert_eq!(c["workers"][0]["options"]["debug"], true);
        let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text.iter().any(|t| {
            t.contains("TRELLIS__WORKERS__3__ID: index 3 is past the end of a list of 1")
        }));
        assert!(
            text.iter()
                .any(|t| t.contains("TRELLIS__VERSION__X: \"x\" goes through a number value"))
        );
    }
}
