//! `realms`: realms, their roles and permissions, their options and store.

use super::*;

/// A realm: a routing and authorization domain.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// The realm's URI (`realm1`).
    pub name: String,
    /// Crossbar.io's realm id (for its management API); accepted.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Roles that sessions in this realm may have.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Realm options.
    #[serde(default)]
    pub options: RealmOptions,
    /// Event history (Crossbar.io's realm `store`).
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Crossbar.io's session statistics: `wamp.session.on_stats` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsConfig>,
    /// Crossbar.io's message tracing: accepted with a warning (Trellis
    /// logs each message of a realm at the `trace` level instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<serde_json::Value>,
}

/// Crossbar.io's realm `stats`: each session's traffic, published as
/// `wamp.session.on_stats` after so many rated messages or seconds, and on
/// join and leave if asked.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Bytes of one rated message (a power of two): a message counts as
    /// `ceil(size / rated_message_size)` rated messages.
    #[serde(default = "default_rated_message_size")]
    pub rated_message_size: u64,
    /// Publish after this many rated messages (0: never by count).
    #[serde(default)]
    pub trigger_after_rated_messages: u64,
    /// Publish after this many seconds (0: never by time).
    #[serde(default)]
    pub trigger_after_duration: u64,
    /// Publish when the session joins.
    #[serde(default)]
    pub trigger_on_join: bool,
    /// Publish when the session leaves.
    #[serde(default = "yes")]
    pub trigger_on_leave: bool,
}

fn default_rated_message_size() -> u64 {
    512
}

/// Crossbar.io's realm store: which topics keep an event history.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` (history is lost on restart); Crossbar.io's `cfxdb` (its
    /// LMDB database) is kept in memory too, with a warning.
    #[serde(rename = "type")]
    pub kind: StoreKind,
    /// `cfxdb`: the database directory; accepted and not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<serde_json::Value>,
    /// Default number of events kept per history entry.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Topics (or patterns) whose events are kept.
    #[serde(rename = "event-history", default)]
    pub event_history: Vec<HistoryConfig>,
    /// Procedures (or patterns) whose calls wait, bounded, when no callee
    /// can take them now (none registered, or every one at its
    /// `concurrency`), until one can or the call's timeout fires.
    #[serde(rename = "call-queue", default)]
    pub call_queue: Vec<HistoryConfig>,
    /// Crossbar.io's store flushing interval: accepted and not used (the
    /// memory store has nothing to flush).
    #[serde(
        rename = "buffer-flush",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buffer_flush: Option<serde_json::Value>,
    /// Crossbar.io's database size bound: accepted and not used (the
    /// memory store is bounded by its `limit`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxsize: Option<serde_json::Value>,
}

/// Store types.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In memory.
    Memory,
    /// Crossbar.io's database store: served in memory (with a warning).
    Cfxdb,
}

/// One topic (or pattern) with an event history, or one procedure (or
/// pattern) with a call queue; `limit` is the events kept, or the calls
/// that may wait.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Topic or pattern.
    pub uri: String,
    /// How `uri` matches topics (`exact` default).
    #[serde(default, rename = "match", with = "match_policy")]
    pub match_policy: MatchPolicy,
    /// Events kept (default: the store's `limit`, else 100).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Options of a realm.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RealmOptions {
    /// `"strict"` (components of `[0-9a-z_]`) or `"loose"` (the default, as
    /// in Crossbar.io).
    #[serde(default)]
    pub uri_check: UriCheck,
    /// Crossbar.io's switch for the meta API; Trellis's is always on
    /// (authorize `wamp.` URIs to restrict it). Accepted, warned about
    /// when false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_meta_api: Option<bool>,
    /// Crossbar.io's forwarding of meta events to its management realm,
    /// which Trellis does not have. Accepted, warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_meta_api: Option<bool>,
    /// Crossbar.io's batching of event deliveries; Trellis hands each
    /// subscriber its event at once. Accepted (a positive integer), warned
    /// about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_dispatching_chunk_size: Option<u64>,
}

/// Which URI rule a realm enforces on client URIs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UriCheck {
    /// Components of `[0-9a-z_]` only.
    Strict,
    /// No whitespace, `.` or `#` inside a component.
    #[default]
    Loose,
}

/// A role and what it may do.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The role's name (`anonymous`, `backend`, ...).
    pub name: String,
    /// Crossbar.io's role id (for its management API); accepted.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Static permissions; everything not allowed here is denied.
    #[serde(default)]
    pub permissions: Vec<PermissionConfig>,
    /// A dynamic authorizer procedure (in the same realm), called with
    /// `(session, uri, action, options)`. Its answers are cached per session
    /// when it says so.
    #[serde(default)]
    pub authorizer: Option<String>,
    /// Crossbar.io's old `allow-by-default`: what no rule matches is
    /// allowed (every action) instead of denied. Read as a last rule
    /// `{"uri": "", "match": "prefix"}` allowing all four actions, which
    /// every other matching rule takes precedence over.
    #[serde(rename = "allow-by-default", default)]
    pub allow_by_default: bool,
}

impl RoleConfig {
    /// The permissions in force: the configured ones, plus the catch-all
    /// rule of `allow-by-default` unless an explicit `""` prefix rule
    /// already decides what nothing else matches.
    pub fn effective_permissions(&self) -> Vec<PermissionConfig> {
        let mut out = self.permissions.clone();
        let has_catch_all = out
            .iter()
            .any(|p| p.uri.is_empty() && p.match_policy == MatchPolicy::Prefix);
        if self.allow_by_default && !has_catch_all {
            out.push(PermissionConfig {
                uri: String::new(),
                match_policy: MatchPolicy::Prefix,
                allow: AllowConfig {
                    call: true,
                    register: true,
                    publish: true,
                    subscribe: true,
                },
                disclose: DiscloseConfig::default(),
                cache: true,
            });
        }
        out
    }
}

/// One static permission rule. Crossbar.io's version-1 form is read too:
/// the action flags at the top (`"call": true`, ...) instead of in `allow`,
/// and a URI with `*` and no `match` (`com.example.*` is the prefix
/// `com.example.`, `*` alone every URI, `com.*.status` the wildcard
/// `com..status`), as `crossbar upgrade` converts them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawPermission")]
pub struct PermissionConfig {
    /// The URI or pattern the rule covers (`""` with prefix match covers all).
    pub uri: String,
    /// How `uri` matches: `exact` (default), `prefix` or `wildcard`.
    #[serde(rename = "match", with = "match_policy")]
    pub match_policy: MatchPolicy,
    /// Which actions are allowed.
    #[serde(default)]
    pub allow: AllowConfig,
    /// Whether the caller/publisher identity is disclosed to callees/subscribers.
    #[serde(default)]
    pub disclose: DiscloseConfig,
    /// Whether the decision may be cached (always true for static rules).
    #[serde(default = "yes")]
    pub cache: bool,
}

pub(super) fn yes() -> bool {
    true
}

/// A permission as written: today's form or Crossbar.io's version-1 form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    uri: String,
    #[serde(default, rename = "match", with = "match_policy_opt")]
    match_policy: Option<MatchPolicy>,
    #[serde(default)]
    allow: Option<AllowConfig>,
    #[serde(default)]
    disclose: DiscloseConfig,
    #[serde(default = "yes")]
    cache: bool,
    /// Crossbar.io's payload validation: read only to name it as not
    /// supported.
    #[serde(default)]
    validate: Option<serde_json::Value>,
    // Version 1: the action flags at the top.
    #[serde(default)]
    call: Option<bool>,
    #[serde(default)]
    register: Option<bool>,
    #[serde(default)]
    publish: Option<bool>,
    #[serde(default)]
    subscribe: Option<bool>,
}

impl TryFrom<RawPermission> for PermissionConfig {
    type Error = String;

    fn try_from(r: RawPermission) -> Result<PermissionConfig, String> {
        if r.validate.is_some() {
            return Err(format!(
                "permission {:?}: Crossbar.io's payload validation (\"validate\", against a type catalog) is not supported by Trellis yet: remove it, and check payloads in the callee or subscriber",
                r.uri
            ));
        }
        let flat = [r.call, r.register, r.publish, r.subscribe];
        let allow = match (r.allow, flat.iter().any(Option::is_some)) {
            (Some(_), true) => {
                return Err(format!(
                    "permission {:?} gives both \"allow\" and the version-1 flags call/register/publish/subscribe: keep one form",
                    r.uri
                ));
            }
            (Some(a), false) => a,
            (None, _) => AllowConfig {
                call: r.call.unwrap_or(false),
                register: r.register.unwrap_or(false),
                publish: r.publish.unwrap_or(false),
                subscribe: r.subscribe.unwrap_or(false),
            },
        };
        let (uri, match_policy) = match r.match_policy {
            Some(m) => (r.uri, m),
            None => starred_uri(&r.uri),
        };
        Ok(PermissionConfig {
            uri,
            match_policy,
            allow,
            disclose: r.disclose,
            cache: r.cache,
        })
    }
}

/// A version-1 URI: no `*` is exact, one trailing `*` a prefix, any other
/// `*` a wildcard component.
pub fn starred_uri(uri: &str) -> (String, MatchPolicy) {
    match uri.matches('*').count() {
        0 => (uri.to_owned(), MatchPolicy::Exact),
        1 if uri.ends_with('*') => (uri[..uri.len() - 1].to_owned(), MatchPolicy::Prefix),
        _ => (uri.replace('*', ""), MatchPolicy::Wildcard),
    }
}

mod match_policy_opt {
    use proto::uri::MatchPolicy;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MatchPolicy>, D::Error> {
        super::match_policy::deserialize(d).map(Some)
    }
}

/// Per-action allow flags (absent means denied).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    #[serde(default)]
    pub call: bool,
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
}

/// Identity disclosure settings.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscloseConfig {
    /// Disclose the caller to the callee even if the caller did not ask.
    #[serde(default)]
    pub caller: bool,
    /// Disclose the publisher to subscribers even if the publisher did not ask.
    #[serde(default)]
    pub publisher: bool,
    /// Honour a client's own `disclose_me` (default true: disclosing
    /// oneself harms no one, and clients such as swampyer always ask).
    /// False refuses such calls and publications with
    /// `wamp.error.option_disallowed.disclose_me`.
    #[serde(default = "yes")]
    pub on_request: bool,
}

impl Default for DiscloseConfig {
    fn default() -> Self {
        DiscloseConfig {
            caller: false,
            publisher: false,
            on_request: true,
        }
    }
}

mod match_policy {
    use proto::uri::MatchPolicy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &MatchPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MatchPolicy, D::Error> {
        let s = String::deserialize(d)?;
        MatchPolicy::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown match policy {s:?}, expected \"exact\", \"prefix\" or \"wildcard\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossbars_starred_uris_become_match_policies() {
        assert_eq!(
            starred_uri("com.example.add"),
            ("com.example.add".into(), MatchPolicy::Exact)
        );
        assert_eq!(
            starred_uri("com.example.*"),
            ("com.example.".into(), MatchPolicy::Prefix)
        );
        assert_eq!(starred_uri("*"), (String::new(), MatchPolicy::Prefix));
        assert_eq!(
            starred_uri("com.*.add"),
            ("com..add".into(), MatchPolicy::Wildcard)
        );
        assert_eq!(
            starred_uri("com.*.*"),
            ("com..".into(), MatchPolicy::Wildcard),
            "two stars: a wildcard, not a prefix"
        );
    }
}
