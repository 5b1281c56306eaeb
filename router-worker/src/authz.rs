//! Static role-based authorization.
//!
//! Each realm owns one [`Authorizer`] built from its roles. A decision takes
//! the most specific permission that matches the URI (exact, then the longest
//! prefix, then the wildcard with the most and earliest concrete
//! components); if that rule does not allow the action, the action is denied.
//! No matching rule also denies.

use std::collections::HashMap;
use std::fmt;

use proto::uri::{self, MatchPolicy, Specificity};

use crate::config::{PermissionConfig, RoleConfig};

/// An action a session asks to perform on a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Call,
    Register,
    Publish,
    Subscribe,
}

impl Action {
    /// The action's name as Crossbar.io spells it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Register => "register",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of an authorization check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    /// The action may proceed.
    pub allow: bool,
    /// The caller/publisher identity must be disclosed.
    pub disclose: bool,
}

/// The compiled permissions of one role.
#[derive(Debug, Default)]
struct Role {
    /// Exact rules by URI: the common case, found without a scan.
    exact: HashMap<String, PermissionConfig>,
    /// Prefix and wildcard rules, most specific first.
    patterns: Vec<PermissionConfig>,
}

/// All roles of one realm.
#[derive(Debug, Default)]
pub struct Authorizer {
    roles: HashMap<String, Role>,
    /// Roles that decide through a dynamic authorizer procedure.
    dynamic: HashMap<String, String>,
}

/// The router's own role: allowed everything unless the config defines a
/// role of that name itself.
pub const TRUSTED: &str = "trusted";

impl Authorizer {
    /// Compile a realm's roles (plus the built-in `trusted` role).
    pub fn new(roles: &[RoleConfig]) -> Self {
        let mut map = HashMap::new();
        let mut dynamic = HashMap::new();
        if !roles.iter().any(|r| r.name == TRUSTED) {
            let all = crate::config::AllowConfig {
                call: true,
                register: true,
                publish: true,
                subscribe: true,
            };
            map.insert(
                TRUSTED.to_owned(),
                Role {
                    exact: HashMap::new(),
                    patterns: vec![PermissionConfig {
                        uri: String::new(),
                        match_policy: MatchPolicy::Prefix,
                        allow: all,
                        disclose: Default::default(),
                        cache: true,
                    }],
                },
            );
        }
        for r in roles {
            if let Some(a) = &r.authorizer {
                dynamic.insert(r.name.clone(), a.clone());
            }
            let mut role = Role::default();
            for p in &r.permissions {
                if p.match_policy == MatchPolicy::Exact {
                    role.exact.insert(p.uri.clone(), p.clone());
                } else {
                    role.patterns.push(p.clone());
                }
            }
            role.patterns
                .sort_by_key(|p| std::cmp::Reverse(Specificity::of(&p.uri, p.match_policy)));
            map.insert(r.name.clone(), role);
        }
        Authorizer {
            roles: map,
            dynamic,
        }
    }

    /// The dynamic authorizer procedure of `role`, if it has one.
    pub fn authorizer_for(&self, role: &str) -> Option<&str> {
        self.dynamic.get(role).map(String::as_str)
    }

    /// True if the realm defines `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// Decide whether `role` may perform `action` on `uri`.
    pub fn authorize(&self, role: &str, uri: &str, action: Action) -> Decision {
        let Some(r) = self.roles.get(role) else {
            return Decision::default();
        };
        let rule = r.exact.get(uri).or_else(|| {
            r.patterns
                .iter()
                .find(|p| uri::matches(&p.uri, p.match_policy, uri))
        });
        let Some(rule) = rule else {
            return Decision::default();
        };
        let allow = match action {
            Action::Call => rule.allow.call,
            Action::Register => rule.allow.register,
            Action::Publish => rule.allow.publish,
            Action::Subscribe => rule.allow.subscribe,
        };
        let disclose = match action {
            Action::Call => rule.disclose.caller,
            Action::Publish => rule.disclose.publisher,
            _ => false,
        };
        Decision { allow, disclose }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> Vec<RoleConfig> {
        serde_json::from_str(
            r#"[{"name": "user", "permissions": [
                {"uri": "", "match": "prefix", "allow": {"subscribe": true}},
                {"uri": "com.app.", "match": "prefix", "allow": {"call": true, "subscribe": true}, "disclose": {"caller": true}},
                {"uri": "com.app.admin.", "match": "prefix", "allow": {}},
                {"uri": "com.app.admin.ping", "allow": {"call": true}},
                {"uri": "com..status", "match": "wildcard", "allow": {"publish": true}}
            ]}]"#,
        )
        .unwrap()
    }

    #[test]
    fn most_specific_rule_wins() {
        let a = Authorizer::new(&role());
        assert_eq!(
            a.authorize("user", "com.app.add", Action::Call),
            Decision {
                allow: true,
                disclose: true
            }
        );
        assert!(
            !a.authorize("user", "com.app.admin.kill", Action::Call)
                .allow
        );
        assert!(
            a.authorize("user", "com.app.admin.ping", Action::Call)
                .allow
        );
        assert!(!a.authorize("user", "com.app.add", Action::Register).allow);
        // Any prefix rule outranks any wildcard rule (as in Crossbar.io), so
        // the catch-all "" prefix decides here, and it allows only subscribe.
        assert!(!a.authorize("user", "com.x.status", Action::Publish).allow);
        assert!(a.authorize("user", "org.other", Action::Subscribe).allow);
        assert!(!a.authorize("user", "org.other", Action::Publish).allow);
    }

    #[test]
    fn unknown_role_is_denied() {
        let a = Authorizer::new(&role());
        assert!(!a.authorize("nobody", "com.app.add", Action::Call).allow);
        assert!(!a.has_role("nobody"));
    }
}
