//! Static role-based authorization; [`dynamic`] asks a role's authorizer
//! procedure instead and keeps its answers.
//!
//! Each realm owns one [`Authorizer`] built from its roles. A decision takes
//! the first permission that matches the URI in Crossbar.io's order: the
//! exact rule, then any wildcard rule (the one with the most and earliest
//! concrete components), then the longest prefix rule. If that rule does not
//! allow the action, the action is denied; no matching rule also denies.
//!
//! A pattern (a SUBSCRIBE or REGISTER with `match` prefix or wildcard) is
//! authorized as the set of URIs it matches ([`Authorizer::authorize_pattern`]):
//! one rule must match the whole set and allow the action. For a
//! registration every rule that takes precedence over it on part of the set
//! must allow it too; a subscription instead never receives an event on a
//! topic such a rule forbids (checked per event by the realm).

pub mod dynamic;

use std::fmt;

use proto::uri::{self, MatchPolicy, Specificity};

use trellis_config::router::{PermissionConfig, RoleConfig};

use crate::fast::HashMap;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The action may proceed.
    pub allow: bool,
    /// The caller/publisher identity must be disclosed.
    pub disclose: bool,
    /// A client's own `disclose_me` is honoured (`disclose.on_request`).
    pub disclose_on_request: bool,
}

impl Default for Decision {
    /// Denied (no rule matched).
    fn default() -> Self {
        Decision {
            allow: false,
            disclose: false,
            disclose_on_request: true,
        }
    }
}

/// The compiled permissions of one role.
#[derive(Debug, Default)]
struct Role {
    /// Exact rules by URI: the common case, found without a scan.
    exact: HashMap<String, PermissionConfig>,
    /// Wildcard rules, then prefix rules: the order in which they decide
    /// (wildcards by [`Specificity`], prefixes longest first).
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
        let mut map = HashMap::default();
        let mut dynamic = HashMap::default();
        if !roles.iter().any(|r| r.name == TRUSTED) {
            let all = trellis_config::router::AllowConfig {
                call: true,
                register: true,
                publish: true,
                subscribe: true,
            };
            map.insert(
                TRUSTED.to_owned(),
                Role {
                    exact: HashMap::default(),
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
            for p in &r.effective_permissions() {
                if p.match_policy == MatchPolicy::Exact {
                    role.exact.insert(p.uri.clone(), p.clone());
                } else {
                    role.patterns.push(p.clone());
                }
            }
            role.patterns
                .sort_by_key(|p| std::cmp::Reverse(precedence(p)));
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
        let exact = if r.exact.is_empty() {
            None
        } else {
            r.exact.get(uri)
        };
        let rule = exact.or_else(|| {
            r.patterns.iter().find(|p| {
                // The catch-all (`""`, prefix) is common: no compare.
                (p.uri.is_empty() && p.match_policy == MatchPolicy::Prefix)
                    || uri::matches(&p.uri, p.match_policy, uri)
            })
        });
        rule.map_or_else(Decision::default, |rule| decide(rule, action))
    }

    /// Decide whether `role` may perform `action` on every URI that
    /// `pattern` matches under `policy` (an exact pattern is one URI).
    ///
    /// # Errors
    /// Why not, naming the rule that decides against it or the rule that
    /// would be needed.
    pub fn authorize_pattern(
        &self,
        role: &str,
        pattern: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<Decision, String> {
        let denied = |why: String| {
            Err(format!(
                "session is not authorized to {action} {pattern:?} with match {policy} (role {role:?}): {why}"
            ))
        };
        if uri::normalize((pattern, policy)).1 == MatchPolicy::Exact {
            let d = self.authorize(role, pattern, action);
            return if d.allow {
                Ok(d)
            } else {
                Err(format!(
                    "session is not authorized to {action} {pattern:?} (role {role:?})"
                ))
            };
        }
        let Some(r) = self.roles.get(role) else {
            return denied("the realm has no such role".into());
        };
        let set = (pattern, policy);
        // The rule that decides for the whole set: the first in precedence
        // order that matches all of it.
        let Some(pos) = r
            .patterns
            .iter()
            .position(|p| uri::pattern_within(set, (&p.uri, p.match_policy)))
        else {
            return denied(format!(
                "a pattern needs one permission that covers all of it: {}",
                needed_rule(pattern, policy)
            ));
        };
        let cover = &r.patterns[pos];
        if !decide(cover, action).allow {
            return denied(format!(
                "the rule that covers it ({:?}, match {}) does not allow {action}",
                cover.uri, cover.match_policy
            ));
        }
        // A subscriber gets no event on a topic that a rule taking
        // precedence forbids: the broker checks each concrete topic of a
        // pattern subscription at delivery. A callee cannot be skipped per
        // call, so for every other action those rules must allow it too.
        if action == Action::Subscribe {
            return Ok(decide(cover, action));
        }
        // Rules that take precedence over it decide part of the set (exact
        // rules first, in URI order so that the message is stable).
        let denies = |p: &&PermissionConfig| {
            uri::patterns_intersect(set, (&p.uri, p.match_policy)) && !decide(p, action).allow
        };
        let exact = r
            .exact
            .values()
            .filter(denies)
            .min_by(|x, y| x.uri.cmp(&y.uri));
        if let Some(p) = exact.or_else(|| r.patterns[..pos].iter().find(denies)) {
            return denied(format!(
                "the rule {:?} (match {}) denies {action} on part of it",
                p.uri, p.match_policy
            ));
        }
        Ok(decide(cover, action))
    }
}

/// The order in which rules decide, larger first: wildcards (by
/// [`Specificity`]) before prefixes (longest first), as Crossbar.io does.
fn precedence(p: &PermissionConfig) -> (u8, Specificity) {
    let rank = match p.match_policy {
        MatchPolicy::Exact => 2,
        MatchPolicy::Wildcard => 1,
        MatchPolicy::Prefix => 0,
    };
    (rank, Specificity::of(&p.uri, p.match_policy))
}

/// What one rule says about one action.
fn decide(rule: &PermissionConfig, action: Action) -> Decision {
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
    Decision {
        allow,
        disclose,
        disclose_on_request: rule.disclose.on_request,
    }
}

/// The rules that would cover a whole pattern, for an error message.
fn needed_rule(pattern: &str, policy: MatchPolicy) -> String {
    match policy {
        MatchPolicy::Prefix => format!("a prefix rule on {pattern:?} or on a prefix of it"),
        _ => format!(
            "the wildcard rule {pattern:?} (or a wildcard with fewer concrete components), or a prefix rule on {:?} or on a prefix of it",
            uri::wildcard_fixed_prefix(pattern)
        ),
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
    fn allow_by_default_allows_what_no_rule_matches() {
        let roles: Vec<RoleConfig> = serde_json::from_str(
            r#"[{"name": "old", "allow-by-default": true, "permissions": [
                    {"uri": "com.secret.", "match": "prefix", "allow": {"subscribe": true}}]},
                {"name": "strict", "permissions": []}]"#,
        )
        .unwrap();
        let a = Authorizer::new(&roles);
        assert!(a.authorize("old", "com.other.x", Action::Call).allow);
        assert!(a.authorize("old", "anything", Action::Publish).allow);
        assert!(
            !a.authorize("old", "com.secret.x", Action::Call).allow,
            "a matching rule still decides"
        );
        assert!(a.authorize("old", "com.secret.x", Action::Subscribe).allow);
        assert!(!a.authorize("strict", "anything", Action::Call).allow);
    }

    #[test]
    fn most_specific_rule_wins() {
        let a = Authorizer::new(&role());
        assert_eq!(
            a.authorize("user", "com.app.add", Action::Call),
            Decision {
                allow: true,
                disclose: true,
                disclose_on_request: true
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
        // Any wildcard rule outranks any prefix rule (as in Crossbar.io): the
        // wildcard decides here, not the "" or "com.app." prefixes.
        assert!(a.authorize("user", "com.x.status", Action::Publish).allow);
        assert!(!a.authorize("user", "com.x.status", Action::Subscribe).allow);
        assert!(a.authorize("user", "com.app.status", Action::Publish).allow);
        assert!(!a.authorize("user", "com.app.status", Action::Call).allow);
        assert!(a.authorize("user", "org.other", Action::Subscribe).allow);
        assert!(!a.authorize("user", "org.other", Action::Publish).allow);
    }

    #[test]
    fn unknown_role_is_denied() {
        let a = Authorizer::new(&role());
        assert!(!a.authorize("nobody", "com.app.add", Action::Call).allow);
        assert!(!a.has_role("nobody"));
    }

    /// The issue's example: Crossbar.io lets the wildcard `com..private`
    /// decide `com.foo.private` over the prefix `com.`.
    #[test]
    fn wildcard_decides_over_prefix() {
        let roles: Vec<RoleConfig> = serde_json::from_str(
            r#"[{"name": "r", "permissions": [
                {"uri": "com.", "match": "prefix", "allow": {"call": true}},
                {"uri": "com..private", "match": "wildcard", "allow": {}}
            ]}]"#,
        )
        .unwrap();
        let a = Authorizer::new(&roles);
        assert!(!a.authorize("r", "com.foo.private", Action::Call).allow);
        assert!(a.authorize("r", "com.foo.public", Action::Call).allow);
        assert!(a.authorize("r", "com.foo.private.x", Action::Call).allow);
    }

    fn pattern_roles() -> Authorizer {
        let roles: Vec<RoleConfig> = serde_json::from_str(
            r#"[{"name": "r", "permissions": [
                {"uri": "com.private.allowed", "allow": {"register": true, "subscribe": true}},
                {"uri": "com.app.", "match": "prefix", "allow": {"register": true, "subscribe": true}},
                {"uri": "com.app.admin.kill", "allow": {"call": true}},
                {"uri": "com.app..secret", "match": "wildcard", "allow": {"call": true}},
                {"uri": "org..feed", "match": "wildcard", "allow": {"subscribe": true}}
            ]}]"#,
        )
        .unwrap();
        Authorizer::new(&roles)
    }

    #[test]
    fn a_pattern_needs_a_rule_covering_all_of_it() {
        let a = pattern_roles();
        let reg = |p: &str, m| a.authorize_pattern("r", p, m, Action::Register);
        // Allowed exactly, so not as a prefix of everything after it.
        let e = reg("com.private.allowed", MatchPolicy::Prefix).unwrap_err();
        assert!(
            e.contains("a prefix rule on \"com.private.allowed\" or on a prefix of it"),
            "{e}"
        );
        assert!(reg("com.private.allowed", MatchPolicy::Exact).is_ok());
        // A prefix inside an allowing prefix is fine, unless a rule that
        // decides part of it denies.
        assert!(reg("com.app.users.x", MatchPolicy::Prefix).is_ok());
        // com.app.users.secret is the wildcard's, which denies register.
        assert!(reg("com.app.users.", MatchPolicy::Prefix).is_err());
        let e = reg("com.app.admin.", MatchPolicy::Prefix).unwrap_err();
        assert!(
            e.contains("\"com.app.admin.kill\" (match exact) denies register"),
            "{e}"
        );
        let e = reg("com.app.", MatchPolicy::Prefix).unwrap_err();
        assert!(e.contains("\"com.app.admin.kill\" (match exact)"), "{e}");
        let e = reg("com.app.x", MatchPolicy::Prefix).unwrap_err();
        assert!(e.contains("\"com.app..secret\" (match wildcard)"), "{e}");
        // Broader than any rule.
        assert!(reg("com.", MatchPolicy::Prefix).is_err());
        assert!(reg("", MatchPolicy::Prefix).is_err());
        // Wildcards: inside a prefix rule, or inside a wildcard rule.
        assert!(reg("com.app.x..y", MatchPolicy::Wildcard).is_ok());
        assert!(reg("com.app.x.", MatchPolicy::Wildcard).is_err());
        assert!(reg("com.app..public", MatchPolicy::Wildcard).is_ok());
        assert!(reg("com.app..secret", MatchPolicy::Wildcard).is_err());
        assert!(reg("com..x", MatchPolicy::Wildcard).is_err());
        let sub = |p: &str, m| a.authorize_pattern("r", p, m, Action::Subscribe);
        // Subscriptions: a covering rule suffices, carve-outs apply per event.
        assert!(sub("com.app.", MatchPolicy::Prefix).is_ok());
        assert!(sub("com.", MatchPolicy::Prefix).is_err());
        assert!(sub("com.private.allowed", MatchPolicy::Prefix).is_err());
        assert!(sub("org..feed", MatchPolicy::Wildcard).is_ok());
        assert!(sub("org.a.feed", MatchPolicy::Wildcard).is_ok());
        assert!(sub("org...", MatchPolicy::Wildcard).is_err());
        assert!(sub("org.", MatchPolicy::Prefix).is_err());
        // The trusted role covers everything.
        assert!(
            a.authorize_pattern(TRUSTED, "", MatchPolicy::Prefix, Action::Register)
                .is_ok()
        );
    }
}
