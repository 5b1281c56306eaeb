//! The options of client-to-router messages as typed structs, parsed once
//! by the router before it acts on a message.
//!
//! Options arrive as dictionaries; a handler that read them key by key would
//! spread the protocol's rules over the router. Each parser here names the
//! option and the shape it expected when a value is wrong, so the router can
//! answer with `wamp.error.invalid_argument` and that text.

use crate::message::Id;
use crate::uri::MatchPolicy;
use crate::value::{Dict, Value};

/// A boolean option, `None` when absent (or null).
fn opt_bool(options: &Dict, key: &str) -> Result<Option<bool>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "option {key:?} must be a boolean, found {}",
            other.type_name()
        )),
    }
}

/// True when the option is present and `true`; anything else is false.
/// For flags read where a wrong type must not fail the message (a
/// PUBLISH's `acknowledge`, a continued call's `progress`).
pub fn flag(options: &Dict, key: &str) -> bool {
    matches!(options.get(key), Some(Value::Bool(true)))
}

fn opt_ids(options: &Dict, key: &str) -> Result<Option<Vec<Id>>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| {
                v.as_id().ok_or_else(|| {
                    format!(
                        "option {key:?} must be a list of session ids, found a {}",
                        v.type_name()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!(
            "option {key:?} must be a list of session ids, found {}",
            other.type_name()
        )),
    }
}

fn opt_strs(options: &Dict, key: &str) -> Result<Option<Vec<String>>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    format!(
                        "option {key:?} must be a list of strings, found a {}",
                        v.type_name()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::Str(s)) => Ok(Some(vec![s.clone()])),
        Some(other) => Err(format!(
            "option {key:?} must be a list of strings, found {}",
            other.type_name()
        )),
    }
}

/// The payload passthru options of a message, to be forwarded in the
/// details of what the router sends on; the payload itself is never touched.
/// Both spellings pass: the specification's `ppt_scheme`, `ppt_serializer`,
/// `ppt_cipher`, `ppt_keyid`, and autobahn-python's (and Crossbar.io's)
/// `enc_algo`, `enc_serializer`, `enc_key`.
///
/// # Errors
/// A value that is not a string, or a set without its scheme.
pub fn passthru(options: &Dict) -> Result<Dict, String> {
    const AUTOBAHN: [&str; 3] = ["enc_algo", "enc_serializer", "enc_key"];
    let mut out = Dict::new();
    for (k, v) in options
        .iter()
        .filter(|(k, _)| k.starts_with("ppt_") || AUTOBAHN.contains(&k.as_str()))
    {
        match v {
            Value::Str(_) => {
                out.insert(k.clone(), v.clone());
            }
            other => {
                return Err(format!(
                    "option {k:?} must be a string, found {}",
                    other.type_name()
                ));
            }
        }
    }
    if out.keys().any(|k| k.starts_with("ppt_")) && !out.contains_key("ppt_scheme") {
        return Err("payload passthru options need \"ppt_scheme\"".into());
    }
    if out.keys().any(|k| k.starts_with("enc_")) && !out.contains_key("enc_algo") {
        return Err("payload passthru options need \"enc_algo\"".into());
    }
    Ok(out)
}

/// Subscriber black- and whitelisting options of one PUBLISH; kept with a
/// retained or recorded event so that later deliveries honour them too.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Audience {
    exclude: Option<Vec<Id>>,
    exclude_authid: Option<Vec<String>>,
    exclude_authrole: Option<Vec<String>>,
    eligible: Option<Vec<Id>>,
    eligible_authid: Option<Vec<String>>,
    eligible_authrole: Option<Vec<String>>,
}

impl Audience {
    /// Read `exclude`, `eligible` and their `_authid` / `_authrole` forms.
    ///
    /// # Errors
    /// An option of the wrong shape, named.
    pub fn parse(o: &Dict) -> Result<Audience, String> {
        Ok(Audience {
            exclude: opt_ids(o, "exclude")?,
            exclude_authid: opt_strs(o, "exclude_authid")?,
            exclude_authrole: opt_strs(o, "exclude_authrole")?,
            eligible: opt_ids(o, "eligible")?,
            eligible_authid: opt_strs(o, "eligible_authid")?,
            eligible_authrole: opt_strs(o, "eligible_authrole")?,
        })
    }

    /// The options [`Audience::parse`] reads back into this audience (to
    /// send a publication to another router).
    pub fn to_options(&self) -> Dict {
        let mut d = Dict::new();
        let ids = |l: &Vec<Id>| Value::List(l.iter().map(|&i| Value::from(i)).collect());
        let strs =
            |l: &Vec<String>| Value::List(l.iter().map(|s| Value::from(s.as_str())).collect());
        for (key, list) in [("exclude", &self.exclude), ("eligible", &self.eligible)] {
            if let Some(l) = list {
                d.insert(key.into(), ids(l));
            }
        }
        for (key, list) in [
            ("exclude_authid", &self.exclude_authid),
            ("exclude_authrole", &self.exclude_authrole),
            ("eligible_authid", &self.eligible_authid),
            ("eligible_authrole", &self.eligible_authrole),
        ] {
            if let Some(l) = list {
                d.insert(key.into(), strs(l));
            }
        }
        d
    }

    /// True if session `id`, known as `authid` in role `authrole`, may
    /// receive the event: no exclusion names it and every eligibility list
    /// given names it.
    pub fn admits(&self, id: Id, authid: &str, authrole: &str) -> bool {
        let has =
            |l: &Option<Vec<String>>, v: &str| l.as_ref().is_some_and(|l| l.iter().any(|x| x == v));
        if self.exclude.as_ref().is_some_and(|l| l.contains(&id))
            || has(&self.exclude_authid, authid)
            || has(&self.exclude_authrole, authrole)
        {
            return false;
        }
        self.eligible.as_ref().is_none_or(|l| l.contains(&id))
            && self
                .eligible_authid
                .as_ref()
                .is_none_or(|_| has(&self.eligible_authid, authid))
            && self
                .eligible_authrole
                .as_ref()
                .is_none_or(|_| has(&self.eligible_authrole, authrole))
    }
}

/// PUBLISH.Options. `acknowledge` is read on its own with [`flag`]: it
/// decides whether a refusal is answered at all.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOptions {
    /// The publisher does not get its own event (default true).
    pub exclude_me: bool,
    /// The publisher asks to be disclosed to subscribers.
    pub disclose_me: bool,
    /// Keep the event for later subscribers asking `get_retained`.
    pub retain: bool,
    /// Who may receive it.
    pub audience: Audience,
    /// Payload passthru options, forwarded in EVENT.Details.
    pub passthru: Dict,
}

impl PublishOptions {
    /// # Errors
    /// An option of the wrong shape, named.
    pub fn parse(o: &Dict) -> Result<PublishOptions, String> {
        let mut passthru = passthru(o)?;
        match o.get(MQTT_PROPERTIES) {
            None => {}
            Some(v @ Value::Dict(_)) => {
                passthru.insert(MQTT_PROPERTIES.into(), v.clone());
            }
            Some(other) => {
                return Err(format!(
                    "option {MQTT_PROPERTIES:?} must be a dict (MQTT 5 properties), found {}",
                    other.type_name()
                ));
            }
        }
        Ok(PublishOptions {
            exclude_me: opt_bool(o, "exclude_me")?.unwrap_or(true),
            disclose_me: opt_bool(o, "disclose_me")?.unwrap_or(false),
            retain: opt_bool(o, "retain")?.unwrap_or(false),
            audience: Audience::parse(o)?,
            passthru,
        })
    }
}

/// PUBLISH.Options and EVENT.Details: a publication's MQTT 5 properties
/// (`user_properties` as a list of `[name, value]`, `content_type`, and
/// `expires_at`, the message expiry as Unix milliseconds), carried from
/// publisher to subscribers as they are.
pub const MQTT_PROPERTIES: &str = "_mqtt";

/// SUBSCRIBE.Options: a shared subscription's group (MQTT's
/// `$share/group/filter`): each event goes to one of the group's
/// subscribers.
pub const SHARE_GROUP: &str = "_share";

/// SUBSCRIBE.Options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// How the topic matches (`match`).
    pub policy: MatchPolicy,
    /// Send the retained events now.
    pub get_retained: bool,
    /// A shared subscription's group (`_share`).
    pub share: Option<String>,
}

impl SubscribeOptions {
    /// # Errors
    /// An option of the wrong shape, named.
    pub fn parse(o: &Dict) -> Result<SubscribeOptions, String> {
        let share = match o.get(SHARE_GROUP) {
            None => None,
            Some(Value::Str(g)) if !g.is_empty() && g.len() <= 256 => Some(g.clone()),
            Some(other) => {
                return Err(format!(
                    "option {SHARE_GROUP:?} must be a group name (a string of 1 to 256 bytes), found {}",
                    other.type_name()
                ));
            }
        };
        Ok(SubscribeOptions {
            policy: MatchPolicy::from_option(o.get("match"))?,
            get_retained: opt_bool(o, "get_retained")?.unwrap_or(false),
            share,
        })
    }
}

/// How a shared registration picks among its callees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvokePolicy {
    /// One callee only; a second registration is refused.
    Single,
    /// In turn.
    RoundRobin,
    /// At random.
    Random,
    /// The callee that registered first.
    First,
    /// The callee that registered last.
    Last,
}

impl InvokePolicy {
    /// Parse the `invoke` option of REGISTER.
    pub fn from_name(s: &str) -> Option<InvokePolicy> {
        Some(match s {
            "single" => InvokePolicy::Single,
            "roundrobin" => InvokePolicy::RoundRobin,
            "random" => InvokePolicy::Random,
            "first" => InvokePolicy::First,
            "last" => InvokePolicy::Last,
            _ => return None,
        })
    }

    /// The policy's wire name.
    pub fn name(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::RoundRobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
        }
    }
}

/// REGISTER.Options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How the procedure matches calls (`match`).
    pub policy: MatchPolicy,
    /// How a shared registration picks its callee (`invoke`).
    pub invoke: InvokePolicy,
    /// Invocations this callee runs at once (`concurrency`, Crossbar.io's);
    /// 0: no limit.
    pub concurrency: u32,
}

impl RegisterOptions {
    /// # Errors
    /// An option of the wrong shape, named.
    pub fn parse(o: &Dict) -> Result<RegisterOptions, String> {
        let policy = MatchPolicy::from_option(o.get("match"))?;
        let invoke = match o.get("invoke") {
            None | Some(Value::Null) => InvokePolicy::Single,
            Some(Value::Str(s)) => InvokePolicy::from_name(s).ok_or_else(|| {
                format!(
                    "unknown invoke policy {s:?}: expected single, roundrobin, random, first or last"
                )
            })?,
            Some(other) => {
                return Err(format!(
                    "option \"invoke\" must be a string, found {}",
                    other.type_name()
                ));
            }
        };
        let concurrency = match o.get("concurrency") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!("option \"concurrency\" must be a positive integer, found {v}")
                })?,
        };
        Ok(RegisterOptions {
            policy,
            invoke,
            concurrency,
        })
    }
}

/// CALL.Options.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// The caller asks to be disclosed to the callee.
    pub disclose_me: bool,
    /// The caller takes progressive results.
    pub receive_progress: bool,
    /// More CALLs with this request id follow (progressive invocations).
    pub progress: bool,
    /// Milliseconds until the router cancels the call; 0 for none.
    pub timeout_ms: u64,
    /// Payload passthru options, forwarded in INVOCATION.Details.
    pub passthru: Dict,
}

impl CallOptions {
    /// # Errors
    /// An option of the wrong shape, named.
    pub fn parse(o: &Dict) -> Result<CallOptions, String> {
        // Most calls have none (read twice per call: as CALL and as
        // INVOCATION).
        if o.is_empty() {
            return Ok(CallOptions {
                disclose_me: false,
                receive_progress: false,
                progress: false,
                timeout_ms: 0,
                passthru: Dict::new(),
            });
        }
        // Milliseconds, as the WAMP spec says (autobahn-python passes
        // CallOptions.timeout through unchanged); fractions round up.
        let timeout_ms = match o.get("timeout") {
            None | Some(Value::Null) => 0,
            Some(Value::Float(x)) if x.is_finite() && *x >= 0.0 && *x < 1e12 => x.ceil() as u64,
            Some(v) => v.as_u64().ok_or_else(|| {
                format!(
                    "option \"timeout\" must be a non-negative number of milliseconds, found {v}"
                )
            })?,
        };
        Ok(CallOptions {
            disclose_me: opt_bool(o, "disclose_me")?.unwrap_or(false),
            receive_progress: opt_bool(o, "receive_progress")?.unwrap_or(false),
            progress: opt_bool(o, "progress")?.unwrap_or(false),
            timeout_ms,
            passthru: passthru(o)?,
        })
    }
}

/// How a caller asked to cancel (CANCEL.Options.mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// Answer the caller now; the callee is not told.
    Skip,
    /// Interrupt the callee and wait for its answer (the default).
    Kill,
    /// Interrupt the callee and answer the caller now.
    KillNoWait,
}

impl CancelMode {
    /// # Errors
    /// A mode that is not one of the three.
    pub fn parse(o: &Dict) -> Result<CancelMode, String> {
        match o.get("mode") {
            None | Some(Value::Null) => Ok(CancelMode::Kill),
            Some(Value::Str(m)) if m == "skip" => Ok(CancelMode::Skip),
            Some(Value::Str(m)) if m == "kill" => Ok(CancelMode::Kill),
            Some(Value::Str(m)) if m == "killnowait" => Ok(CancelMode::KillNoWait),
            Some(other) => Err(format!(
                "unknown cancel mode {other}: expected \"skip\", \"kill\" or \"killnowait\""
            )),
        }
    }

    /// The mode's wire name.
    pub fn name(self) -> &'static str {
        match self {
            CancelMode::Skip => "skip",
            CancelMode::Kill => "kill",
            CancelMode::KillNoWait => "killnowait",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_properties_pass_from_publish_options_to_event_details() {
        let props = crate::dict! {"content_type" => "text/plain"};
        let o = crate::dict! {MQTT_PROPERTIES => Value::Dict(props.clone()), "exclude_me" => false};
        let parsed = PublishOptions::parse(&o).expect("valid");
        assert_eq!(
            parsed.passthru.get(MQTT_PROPERTIES),
            Some(&Value::Dict(props))
        );
        let bad = crate::dict! {MQTT_PROPERTIES => "x"};
        let e = PublishOptions::parse(&bad).expect_err("not a dict");
        assert!(e.contains("\"_mqtt\" must be a dict"), "{e}");
    }

    #[test]
    fn an_audience_survives_its_options() {
        let o = crate::dict! {
            "exclude" => Value::List(vec![Value::from(7u64)]),
            "eligible_authid" => Value::List(vec![Value::from("alice"), Value::from("bob")]),
            "exclude_authrole" => Value::List(vec![Value::from("guest")])
        };
        let a = Audience::parse(&o).unwrap();
        assert_eq!(Audience::parse(&a.to_options()).unwrap(), a);
        assert!(a.admits(8, "alice", "user"));
        assert!(!a.admits(7, "alice", "user"));
        assert_eq!(Audience::default().to_options(), Dict::new());
    }
    use crate::dict;

    #[test]
    fn passthru_options_are_checked_and_collected() {
        let o =
            dict! { "ppt_scheme" => "x_custom", "ppt_serializer" => "cbor", "acknowledge" => true };
        assert_eq!(passthru(&o).unwrap().len(), 2);
        assert!(
            passthru(&dict! { "ppt_cipher" => "x" }).is_err(),
            "scheme required"
        );
        assert!(
            passthru(&dict! { "ppt_scheme" => 1i64 }).is_err(),
            "strings only"
        );
        assert!(passthru(&Dict::new()).unwrap().is_empty());
        let autobahn = dict! { "enc_algo" => "x_custom", "enc_serializer" => "json" };
        assert_eq!(passthru(&autobahn).unwrap().len(), 2);
        assert!(
            passthru(&dict! { "enc_key" => "k" }).is_err(),
            "enc_algo required"
        );
    }

    #[test]
    fn publish_defaults_and_errors() {
        let p = PublishOptions::parse(&Dict::new()).unwrap();
        assert!(p.exclude_me && !p.disclose_me && !p.retain);
        assert_eq!(p.audience, Audience::default());
        let e = PublishOptions::parse(&dict! { "retain" => "yes" }).unwrap_err();
        assert!(e.contains("\"retain\" must be a boolean"), "{e}");
        let e = PublishOptions::parse(&dict! { "exclude" => vec![Value::from("x")] }).unwrap_err();
        assert!(e.contains("list of session ids"), "{e}");
    }

    #[test]
    fn audience_lists_combine() {
        let a = Audience::parse(&dict! {
            "eligible_authrole" => "user",
            "exclude_authid" => vec![Value::from("mallory")],
            "exclude" => vec![Value::from(7u64)],
        })
        .unwrap();
        assert!(a.admits(1, "alice", "user"));
        assert!(!a.admits(1, "alice", "admin"), "not in eligible roles");
        assert!(!a.admits(1, "mallory", "user"), "excluded authid");
        assert!(!a.admits(7, "alice", "user"), "excluded session");
        let only = Audience::parse(&dict! { "eligible" => vec![Value::from(3u64)] }).unwrap();
        assert!(only.admits(3, "a", "r") && !only.admits(4, "a", "r"));
        assert!(Audience::default().admits(9, "anyone", "any"));
    }

    #[test]
    fn call_options_timeout_and_flags() {
        let c =
            CallOptions::parse(&dict! { "timeout" => 1.2f64, "receive_progress" => true }).unwrap();
        assert_eq!(c.timeout_ms, 2, "fractions round up");
        assert!(c.receive_progress && !c.progress && !c.disclose_me);
        assert_eq!(CallOptions::parse(&Dict::new()).unwrap().timeout_ms, 0);
        // No options: what the full reading gives for none it knows.
        assert_eq!(
            CallOptions::parse(&Dict::new()),
            CallOptions::parse(&dict! { "x_custom" => 1i64 })
        );
        assert!(CallOptions::parse(&dict! { "timeout" => -1i64 }).is_err());
        assert!(CallOptions::parse(&dict! { "timeout" => f64::NAN }).is_err());
    }

    #[test]
    fn register_and_cancel_options() {
        let r = RegisterOptions::parse(&dict! { "match" => "prefix", "invoke" => "roundrobin" })
            .unwrap();
        assert_eq!(r.policy, MatchPolicy::Prefix);
        assert_eq!(r.invoke, InvokePolicy::RoundRobin);
        let e = RegisterOptions::parse(&dict! { "invoke" => "sometimes" }).unwrap_err();
        assert!(e.contains("unknown invoke policy \"sometimes\""), "{e}");
        assert_eq!(CancelMode::parse(&Dict::new()).unwrap(), CancelMode::Kill);
        assert_eq!(
            CancelMode::parse(&dict! { "mode" => "skip" }).unwrap(),
            CancelMode::Skip
        );
        assert!(CancelMode::parse(&dict! { "mode" => "later" }).is_err());
        let s = SubscribeOptions::parse(&dict! { "match" => "wildcard", "get_retained" => true })
            .unwrap();
        assert!(s.get_retained && s.policy == MatchPolicy::Wildcard);
    }
}
