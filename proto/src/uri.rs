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
            None => Ok(MatchPolicy::Exact),
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

/// Why a URI is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
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
    if uri.is_empty() {
        // The empty prefix matches everything (a catch-all permission or
        // subscription); nothing else may be empty.
        return if policy == MatchPolicy::Prefix {
            Ok(())
        } else {
            Err(UriError::Empty)
        };
    }
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

    /// Reference wildcard matcher written the obvious (allocating) way.
    fn naive_wildcard(p: &str, u: &str) -> bool {
        let p: Vec<&str> = p.split('.').collect();
        let u: Vec<&str> = u.split('.').collect();
        p.len() == u.len() && p.iter().zip(&u).all(|(a, b)| a.is_empty() || a == b)
    }

    proptest! {
        #[test]
        fn wildcard_matches_reference(p in "[ab]{0,2}(\\.[ab]{0,2}){0,3}", u in "[ab]{1,2}(\\.[ab]{1,2}){0,3}") {
            prop_assert_eq!(matches(&p, MatchPolicy::Wildcard, &u), naive_wildcard(&p, &u));
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
