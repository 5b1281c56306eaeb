//! WAMP URI rules: validation (loose and strict), match policies, matching.
//!
//! Loose: dot-separated components without whitespace, `.` or `#`. Strict:
//! components of `[0-9a-z_]`. Exact URIs have no empty component; prefix
//! patterns may end with an empty component (`com.app.`); wildcard patterns
//! may have empty components anywhere (`com..pop`), each matching exactly one
//! component. Prefix matching is a plain string prefix (`com.a` matches
//! `com.ab`), as the WAMP specification defines it.

use std::fmt;

use crate::value::Value;

/// How a subscription, registration or permission matches URIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum MatchPolicy {
    /// The URI itself.
    #[default]
    Exact,
    /// Every URI that starts with the pattern.
    Prefix,
    /// Every URI with the same number of components, empty pattern
    /// components matching any component.
    Wildcard,
}

impl MatchPolicy {
    /// The policy's wire name.
    pub fn name(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }

    /// Parse a `match` option as sent in SUBSCRIBE/REGISTER options.
    ///
    /// # Errors
    /// A message naming the bad value and the accepted ones.
    pub fn from_option(v: Option<&Value>) -> Result<MatchPolicy, String> {
        match v {
            None | Some(Value::Null) => Ok(MatchPolicy::Exact),
            Some(Value::Str(s)) => MatchPolicy::from_name(s).ok_or_else(|| {
                format!(
                    "unknown match policy {s:?}: expected \"exact\", \"prefix\" or \"wildcard\""
                )
            }),
            Some(other) => Err(format!(
                "option \"match\" must be a string (\"exact\", \"prefix\" or \"wildcard\"), found {}",
                other.type_name()
            )),
        }
    }

    /// Look a policy up by name.
    pub fn from_name(s: &str) -> Option<MatchPolicy> {
        match s {
            "exact" => Some(MatchPolicy::Exact),
            "prefix" => Some(MatchPolicy::Prefix),
            "wildcard" => Some(MatchPolicy::Wildcard),
            _ => None,
        }
    }
}

/// The longest URI accepted, in bytes: URIs are keys the router keeps
/// (registrations, subscriptions, retained events), so their size is
/// bounded like everything else a client sends.
pub const MAX_URI_LEN: usize = 1024;

/// Why a URI is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Longer than [`MAX_URI_LEN`].
    #[error("the URI is {len} bytes long, more than the {MAX_URI_LEN} bytes a URI may have")]
    TooLong {
        /// The URI's length in bytes.
        len: usize,
    },
    /// The URI is the empty string where that is not allowed.
    #[error("the URI is empty")]
    Empty,
    /// A component is empty (`com..pop`) where the policy forbids it.
    #[error(
        "URI {uri:?} has an empty component at position {position} (allowed only in wildcard patterns{last})"
    )]
    EmptyComponent {
        /// The offending URI.
        uri: String,
        /// 1-based component index.
        position: usize,
        /// Mentions prefix patterns when the empty component is not last.
        last: &'static str,
    },
    /// A character that URIs may not contain.
    #[error("URI {uri:?} contains {ch:?} in component {position}, which is not allowed{rule}")]
    BadChar {
        /// The offending URI.
        uri: String,
        /// The character.
        ch: char,
        /// 1-based component index.
        position: usize,
        /// Which rule applies (strict or loose).
        rule: &'static str,
    },
}

/// Validate `uri` for `policy`; `strict` applies the `[0-9a-z_]` rule.
///
/// # Errors
/// [`UriError`] saying which component is wrong and why.
pub fn validate(uri: &str, policy: MatchPolicy, strict: bool) -> Result<(), UriError> {
    if uri.len() > MAX_URI_LEN {
        return Err(UriError::TooLong { len: uri.len() });
    }
    if uri.is_empty() {
        // The empty prefix matches everything (a catch-all permission or
        // subscription); nothing else may be empty.
        return if policy == MatchPolicy::Prefix {
            Ok(())
        } else {
            Err(UriError::Empty)
        };
    }
    if plain_ascii_ok(uri.as_bytes(), policy, strict) {
        return Ok(());
    }
    check_components(uri, policy, strict)
}

/// One pass over the bytes, for the URI nearly every message carries
/// (ASCII and valid): `true` when `uri` is valid for `policy`. `false`
/// only means "look closer" (text beyond ASCII, or an error to describe),
/// and [`check_components`] decides.
fn plain_ascii_ok(uri: &[u8], policy: MatchPolicy, strict: bool) -> bool {
    // Whether the component read so far is empty.
    let mut empty = true;
    for &c in uri {
        if c == b'.' {
            // An empty component before a dot: only wildcards have those
            // (a prefix pattern's may only be the last).
            if empty && policy != MatchPolicy::Wildcard {
                return false;
            }
            empty = true;
            continue;
        }
        let ok = if strict {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'
        } else {
            // `char::is_whitespace` on ASCII: tab to carriage return, space.
            c.is_ascii() && !matches!(c, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' | b'#')
        };
        if !ok {
            return false;
        }
        empty = false;
    }
    !empty || policy != MatchPolicy::Exact
}

/// [`validate`]'s rules component by component, with the error that
/// names the component; for a non-empty URI of at most [`MAX_URI_LEN`].
fn check_components(uri: &str, policy: MatchPolicy, strict: bool) -> Result<(), UriError> {
    let count = uri.split('.').count();
    for (i, comp) in uri.split('.').enumerate() {
        let position = i + 1;
        if comp.is_empty() {
            let ok = match policy {
                MatchPolicy::Exact => false,
                MatchPolicy::Prefix => position == count,
                MatchPolicy::Wildcard => true,
            };
            if !ok {
                return Err(UriError::EmptyComponent {
                    uri: uri.to_owned(),
                    position,
                    last: " and as the last component of prefix patterns",
                });
            }
            continue;
        }
        for ch in comp.chars() {
            let bad = if strict {
                !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            } else {
                ch.is_whitespace() || ch == '#'
            };
            if bad {
                return Err(UriError::BadChar {
                    uri: uri.to_owned(),
                    ch,
                    position,
                    rule: if strict {
                        " (strict URIs use only 0-9, a-z and _)"
                    } else {
                        " (no whitespace or #)"
                    },
                });
            }
        }
    }
    Ok(())
}

/// True if the URI starts with the router-reserved `wamp.` prefix.
pub fn is_reserved(uri: &str) -> bool {
    uri.starts_with("wamp.")
}

/// True if `pattern` under `policy` matches the concrete `uri`.
pub fn matches(pattern: &str, policy: MatchPolicy, uri: &str) -> bool {
    match policy {
        MatchPolicy::Exact => pattern == uri,
        MatchPolicy::Prefix => uri.starts_with(pattern),
        MatchPolicy::Wildcard => {
            let mut p = pattern.split('.');
            let mut u = uri.split('.');
            loop {
                match (p.next(), u.next()) {
                    (None, None) => return true,
                    (Some(pc), Some(uc)) => {
                        if !pc.is_empty() && pc != uc {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
        }
    }
}

/// The text every URI matched by the wildcard pattern starts with: its
/// components before the first empty one, with the dot after them
/// (`com.app..x` → `com.app.`; `..x` → ``).
pub fn wildcard_fixed_prefix(pattern: &str) -> String {
    let mut out = String::new();
    for comp in pattern.split('.') {
        if comp.is_empty() {
            return out;
        }
        out.push_str(comp);
        out.push('.');
    }
    // No empty component: the pattern matches only itself.
    out.pop();
    out
}

/// The policy a pattern really has: a wildcard pattern without an empty
/// component matches only itself, as an exact one does.
pub fn normalize((pattern, policy): (&str, MatchPolicy)) -> (&str, MatchPolicy) {
    if policy == MatchPolicy::Wildcard && !pattern.split('.').any(str::is_empty) {
        (pattern, MatchPolicy::Exact)
    } else {
        (pattern, policy)
    }
}

/// True if every URI that `inner` matches is matched by `outer` too (the
/// set of `inner` lies within the set of `outer`).
pub fn pattern_within(inner: (&str, MatchPolicy), outer: (&str, MatchPolicy)) -> bool {
    let ((i, ip), (o, op)) = (normalize(inner), normalize(outer));
    match (ip, op) {
        (MatchPolicy::Exact, _) => matches(o, op, i),
        (_, MatchPolicy::Exact) => false,
        (MatchPolicy::Prefix, MatchPolicy::Prefix) => i.starts_with(o),
        // A prefix pattern matches URIs of any length; a wildcard only
        // URIs of its own length.
        (MatchPolicy::Prefix, MatchPolicy::Wildcard) => false,
        (MatchPolicy::Wildcard, MatchPolicy::Prefix) => wildcard_fixed_prefix(i).starts_with(o),
        (MatchPolicy::Wildcard, MatchPolicy::Wildcard) => {
            i.split('.').count() == o.split('.').count()
                && i.split('.')
                    .zip(o.split('.'))
                    .all(|(ic, oc)| oc.is_empty() || (!ic.is_empty() && ic == oc))
        }
    }
}

/// True if some URI is matched by both patterns.
pub fn patterns_intersect(a: (&str, MatchPolicy), b: (&str, MatchPolicy)) -> bool {
    match (normalize(a), normalize(b)) {
        ((x, MatchPolicy::Exact), other) | (other, (x, MatchPolicy::Exact)) => {
            matches(other.0, other.1, x)
        }
        ((p, MatchPolicy::Prefix), (q, MatchPolicy::Prefix)) => {
            p.starts_with(q) || q.starts_with(p)
        }
        ((p, MatchPolicy::Prefix), (w, MatchPolicy::Wildcard))
        | ((w, MatchPolicy::Wildcard), (p, MatchPolicy::Prefix)) => {
            // Some URI of the wildcard's shape starts with the prefix text:
            // the prefix's whole components agree with the wildcard's, and
            // its last (maybe partial) component can begin the wildcard's.
            let pc: Vec<&str> = p.split('.').collect();
            let wc: Vec<&str> = w.split('.').collect();
            if wc.len() < pc.len() {
                return false;
            }
            let last = pc.len() - 1;
            pc.iter().zip(&wc).enumerate().all(|(k, (pp, ww))| {
                ww.is_empty()
                    || if k == last {
                        ww.starts_with(pp)
                    } else {
                        pp == ww
                    }
            })
        }
        ((v, MatchPolicy::Wildcard), (w, MatchPolicy::Wildcard)) => {
            v.split('.').count() == w.split('.').count()
                && v.split('.')
                    .zip(w.split('.'))
                    .all(|(x, y)| x.is_empty() || y.is_empty() || x == y)
        }
    }
}

/// Orders matches from most to least specific: exact, then longer prefixes,
/// then wildcards with more (and earlier) concrete components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    rank: u8,
    weight: usize,
}

impl Specificity {
    /// The specificity of `pattern` under `policy`; larger is more specific.
    pub fn of(pattern: &str, policy: MatchPolicy) -> Specificity {
        match policy {
            MatchPolicy::Exact => Specificity { rank: 2, weight: 0 },
            MatchPolicy::Prefix => Specificity {
                rank: 1,
                weight: pattern.len(),
            },
            MatchPolicy::Wildcard => {
                // Concrete components count, earlier ones more: a bitmask
                // with the first component as the most significant bit.
                let comps: Vec<&str> = pattern.split('.').collect();
                let n = comps.len().min(usize::BITS as usize - 1);
                let weight = comps
                    .iter()
                    .take(n)
                    .enumerate()
                    .filter(|(_, c)| !c.is_empty())
                    .fold(0usize, |acc, (i, _)| acc | (1 << (n - 1 - i)));
                Specificity { rank: 0, weight }
            }
        }
    }
}

impl fmt::Display for MatchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICIES: [MatchPolicy; 3] = [
        MatchPolicy::Exact,
        MatchPolicy::Prefix,
        MatchPolicy::Wildcard,
    ];

    /// The one-pass check of plain URIs never decides otherwise than the
    /// component rules: every string of up to four characters from an
    /// alphabet of dots, valid and invalid characters (ASCII whitespace,
    /// `#`, upper case, text beyond ASCII, Unicode whitespace), every
    /// policy, loose and strict.
    #[test]
    fn the_plain_pass_agrees_with_the_component_rules() {
        let alphabet = [
            'a', 'Z', '0', '_', '-', '.', '#', ' ', '\t', '\x0b', '\x1c', '\0', 'é', '\u{a0}',
        ];
        let mut uris = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..4 {
            uris = uris
                .iter()
                .flat_map(|u| alphabet.iter().map(move |c| format!("{u}{c}")))
                .collect();
            all.extend(uris.iter().cloned());
        }
        let mut fast = 0;
        for uri in &all {
            for policy in POLICIES {
                for strict in [false, true] {
                    let plain = plain_ascii_ok(uri.as_bytes(), policy, strict);
                    let rules = check_components(uri, policy, strict);
                    if plain {
                        fast += 1;
                        assert_eq!(rules, Ok(()), "{uri:?} {policy:?} strict={strict}");
                    }
                    assert_eq!(
                        validate(uri, policy, strict),
                        rules,
                        "{uri:?} {policy:?} strict={strict}"
                    );
                }
            }
        }
        // Not vacuous: most valid URIs take the one pass.
        assert!(fast > 10_000, "{fast}");
        // Every ASCII character, alone and between two components.
        for c in 0u8..128 {
            for uri in [char::from(c).to_string(), format!("a.{}.b", char::from(c))] {
                for policy in POLICIES {
                    for strict in [false, true] {
                        assert_eq!(
                            plain_ascii_ok(uri.as_bytes(), policy, strict),
                            check_components(&uri, policy, strict).is_ok(),
                            "{uri:?} {policy:?} strict={strict}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn loose_and_strict_rules() {
        assert!(validate("com.example.add2", MatchPolicy::Exact, true).is_ok());
        assert!(validate("com.Example.add-2", MatchPolicy::Exact, false).is_ok());
        let e = validate("com.Example", MatchPolicy::Exact, true).unwrap_err();
        assert!(e.to_string().contains("'E'"), "{e}");
        let e = validate("com.ex ample", MatchPolicy::Exact, false).unwrap_err();
        assert!(
            matches!(
                e,
                UriError::BadChar {
                    ch: ' ',
                    position: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(validate("com.a#b", MatchPolicy::Exact, false).is_err());
        assert_eq!(
            validate("", MatchPolicy::Exact, false),
            Err(UriError::Empty)
        );
    }

    #[test]
    fn length_is_bounded() {
        let long = format!("com.{}", "a".repeat(MAX_URI_LEN - 4));
        assert!(validate(&long, MatchPolicy::Exact, true).is_ok());
        let e = validate(&format!("{long}b"), MatchPolicy::Exact, true).unwrap_err();
        assert_eq!(
            e,
            UriError::TooLong {
                len: MAX_URI_LEN + 1
            }
        );
        assert!(e.to_string().contains("1024 bytes"), "{e}");
    }

    #[test]
    fn empty_components_per_policy() {
        assert!(validate("com..pop", MatchPolicy::Exact, false).is_err());
        assert!(validate("com..pop", MatchPolicy::Prefix, false).is_err());
        assert!(validate("com..pop", MatchPolicy::Wildcard, false).is_ok());
        assert!(validate("com.app.", MatchPolicy::Prefix, false).is_ok());
        assert!(validate("com.app.", MatchPolicy::Exact, false).is_err());
        assert!(validate("", MatchPolicy::Prefix, false).is_ok());
        assert!(validate(".com", MatchPolicy::Exact, false).is_err());
    }

    #[test]
    fn matching() {
        assert!(matches("com.a", MatchPolicy::Prefix, "com.ab"));
        assert!(matches("", MatchPolicy::Prefix, "anything"));
        assert!(matches(
            "com..pop",
            MatchPolicy::Wildcard,
            "com.balloon.pop"
        ));
        assert!(!matches(
            "com..pop",
            MatchPolicy::Wildcard,
            "com.balloon.pop.x"
        ));
        assert!(!matches("com..pop", MatchPolicy::Wildcard, "com.pop"));
        assert!(!matches("com.x", MatchPolicy::Exact, "com.xy"));
    }

    #[test]
    fn specificity_order() {
        let exact = Specificity::of("a.b.c", MatchPolicy::Exact);
        let long = Specificity::of("a.b", MatchPolicy::Prefix);
        let short = Specificity::of("a", MatchPolicy::Prefix);
        let wc1 = Specificity::of("a..c", MatchPolicy::Wildcard);
        let wc2 = Specificity::of("..c", MatchPolicy::Wildcard);
        assert!(exact > long && long > short && short > wc1 && wc1 > wc2);
    }

    #[test]
    fn pattern_sets() {
        use MatchPolicy::{Exact, Prefix, Wildcard};
        assert!(pattern_within(("com.a.b", Prefix), ("com.a", Prefix)));
        assert!(pattern_within(("com.a", Prefix), ("", Prefix)));
        assert!(!pattern_within(("com.a", Prefix), ("com.a", Exact)));
        assert!(!pattern_within(("com.a", Prefix), ("com.a.", Prefix)));
        assert!(!pattern_within(("com.a", Prefix), ("com..", Wildcard)));
        assert!(pattern_within(("com..x", Wildcard), ("com.", Prefix)));
        assert!(pattern_within(("com..x", Wildcard), ("co", Prefix)));
        assert!(!pattern_within(("com..x", Wildcard), ("com.a", Prefix)));
        assert!(!pattern_within(("..x", Wildcard), ("com.", Prefix)));
        assert!(pattern_within(("com..x", Wildcard), ("com..", Wildcard)));
        assert!(!pattern_within(("com...", Wildcard), ("com..", Wildcard)));
        assert!(!pattern_within(("com..", Wildcard), ("com..x", Wildcard)));
        assert!(pattern_within(("com.a.x", Exact), ("com..x", Wildcard)));

        assert!(patterns_intersect(("com.a", Prefix), ("com.ab.c", Exact)));
        assert!(!patterns_intersect(("com.b", Prefix), ("com.ab.c", Exact)));
        assert!(patterns_intersect(("com.a", Prefix), ("com.", Prefix)));
        assert!(patterns_intersect(("com.", Prefix), ("com.a.b", Prefix)));
        assert!(!patterns_intersect(("com.a", Prefix), ("com.b", Prefix)));
        assert!(!patterns_intersect(
            ("com.private.allowed", Prefix),
            ("com..x", Wildcard)
        ));
        assert!(patterns_intersect(
            ("com.private.allowed", Prefix),
            ("com.private.allowedX.y", Wildcard)
        ));
        assert!(!patterns_intersect(
            ("com.private.allowed", Prefix),
            ("com.public", Wildcard)
        ));
        assert!(patterns_intersect(
            ("com.private.allowed", Prefix),
            ("com..", Wildcard)
        ));
        assert!(patterns_intersect(("a.b.c", Prefix), ("a..", Wildcard)));
        assert!(!patterns_intersect(("a.b.c.d", Prefix), ("a..", Wildcard)));
        assert!(patterns_intersect(("", Prefix), ("..", Wildcard)));
        assert!(patterns_intersect(("a..c", Wildcard), ("a.b.", Wildcard)));
        assert!(!patterns_intersect(("a..c", Wildcard), ("a.b.d", Wildcard)));
        assert!(!patterns_intersect(("a..c", Wildcard), ("a.b", Wildcard)));
    }

    /// Reference wildcard matcher written the obvious (allocating) way.
    fn naive_wildcard(p: &str, u: &str) -> bool {
        let p: Vec<&str> = p.split('.').collect();
        let u: Vec<&str> = u.split('.').collect();
        p.len() == u.len() && p.iter().zip(&u).all(|(a, b)| a.is_empty() || a == b)
    }

    fn all_uris() -> Vec<String> {
        let alphabet = ["a", "b", "ab", "ba"];
        let mut out: Vec<String> = Vec::new();
        let mut level: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            out.extend(level.iter().cloned());
            level = level
                .iter()
                .flat_map(|u| alphabet.iter().map(move |c| format!("{u}.{c}")))
                .collect();
        }
        out
    }

    proptest! {
        #[test]
        fn wildcard_matches_reference(p in "[ab]{0,2}(\\.[ab]{0,2}){0,3}", u in "[ab]{1,2}(\\.[ab]{1,2}){0,3}") {
            prop_assert_eq!(matches(&p, MatchPolicy::Wildcard, &u), naive_wildcard(&p, &u));
        }

        /// `pattern_within` and `patterns_intersect` agree with a brute
        /// force over every URI of up to five components from a small
        /// alphabet (enough to hold a witness for patterns of up to three).
        #[test]
        fn pattern_sets_match_brute_force(
            a in "(a|b|ab)?(\\.(a|b|ab)?){0,2}", ap in 0u8..3,
            b in "(a|b|ab)?(\\.(a|b|ab)?){0,2}", bp in 0u8..3,
        ) {
            let policy = |n: u8| [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard][n as usize];
            let (ap, bp) = (policy(ap), policy(bp));
            let valid = |s: &str, p| validate(s, p, false).is_ok();
            if !(valid(&a, ap) && valid(&b, bp)) {
                return Ok(());
            }
            let uris = all_uris();
            let in_a = |u: &String| matches(&a, ap, u);
            let in_b = |u: &String| matches(&b, bp, u);
            prop_assert_eq!(
                patterns_intersect((&a, ap), (&b, bp)),
                uris.iter().any(|u| in_a(u) && in_b(u)),
                "intersect {:?} {} / {:?} {}", a, ap, b, bp
            );
            prop_assert_eq!(
                pattern_within((&a, ap), (&b, bp)),
                uris.iter().filter(|u| in_a(u)).all(in_b),
                "within {:?} {} / {:?} {}", a, ap, b, bp
            );
        }

        #[test]
        fn validate_never_panics(s in "\\PC{0,40}") {
            for policy in [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard] {
                let _ = validate(&s, policy, true);
                let _ = validate(&s, policy, false);
            }
        }
    }
}
