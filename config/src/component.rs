//! Trellis's built-in components: their classnames, and the settings of
//! those that take any, checked as the rest of the config is.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::router::{CraUser, RouterComponentConfig};

/// Every built-in container component `classname`.
pub const CLASSNAMES: &[&str] = &["trellis.balloon.Backend"];

/// Every built-in router component `classname`.
pub const ROUTER_CLASSNAMES: &[&str] = &["trellis.auth.UserDatabase"];

/// `trellis check` for a router component: a known classname, and
/// settings (`extra`) of the right shape. `Err((key, message))`.
///
/// # Errors
/// The key under the component and what is wrong.
pub fn check_router_component(c: &RouterComponentConfig) -> Result<(), (String, String)> {
    if c.references.is_some() {
        return Err((
            "references".into(),
            "Crossbar.io's references to router connections (its database connections, \"connection:ID\") are not supported by Trellis: connect to the database from the component itself".into(),
        ));
    }
    if c.is_python() {
        if !c.classname.contains('.') {
            return Err((
                "classname".into(),
                format!(
                    "{:?}: a Python component is named as module.Class (package.module.Class)",
                    c.classname
                ),
            ));
        }
        return Ok(());
    }
    if !ROUTER_CLASSNAMES.contains(&c.classname.as_str()) {
        return Err((
            "classname".into(),
            format!(
                "unknown router component {:?}: Trellis has {}",
                c.classname,
                ROUTER_CLASSNAMES.join(", ")
            ),
        ));
    }
    UserDatabaseConfig::from_extra(c.extra.as_ref()).map(|_| ())
}

/// `extra` of `trellis.auth.UserDatabase`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDatabaseConfig {
    /// The authenticator procedure to register.
    pub procedure: String,
    /// Users inline, by the authid they log in with.
    #[serde(default)]
    pub users: BTreeMap<String, CraUser>,
    /// A JSON file of more users (`{"authid": {...}}`), relative to the
    /// node directory.
    #[serde(default)]
    pub users_file: Option<String>,
}

impl UserDatabaseConfig {
    /// `extra`, read: `Err((key, message))`.
    pub fn from_extra(
        extra: Option<&serde_json::Value>,
    ) -> Result<UserDatabaseConfig, (String, String)> {
        let Some(extra) = extra else {
            return Err((
                "extra".into(),
                "missing: give {\"procedure\": \"com.example.authenticate\", \"users\": {...}}"
                    .into(),
            ));
        };
        serde_path_to_error::deserialize(extra.clone()).map_err(|e| {
            let path = e.path().to_string();
            (format!("extra.{path}"), e.into_inner().to_string())
        })
    }
}
