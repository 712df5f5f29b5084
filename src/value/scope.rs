//! A set of RFC 6749 §3.3 scope tokens.

use std::{collections::BTreeSet, fmt};

use crate::error::Error;

/// The longest scope string accepted.
pub const MAX_LENGTH: usize = 1024;

/// A validated set of scope tokens; it prints sorted and space-separated, so equal sets print alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// Parses a space-separated list; each token must be `1*( %x21 / %x23-5B / %x5D-7E )`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() > MAX_LENGTH {
            return Err(Error::invalid_request("scope is too long"));
        }
        let valid = |t: &str| {
            t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        };
        let mut tokens = BTreeSet::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            if !valid(token) {
                return Err(Error::InvalidScope);
            }
            tokens.insert(token.to_owned());
        }
        Ok(Self(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    pub fn is_subset(&self, of: &Scope) -> bool {
        self.0.is_subset(&of.0)
    }

    pub fn without(&self, token: &str) -> Scope {
        Scope(self.0.iter().filter(|t| *t != token).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, token) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(token)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sorts_and_deduplicates() {
        let s = Scope::parse("write  read write").unwrap();
        assert_eq!(s.to_string(), "read write");
        assert!(Scope::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_characters_outside_the_rfc_grammar() {
        for bad in ["a\"b", "a\\b", "caf\u{e9}", "a\tb"] {
            assert!(
                matches!(Scope::parse(bad), Err(Error::InvalidScope)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subset_and_without() {
        let all = Scope::parse("admin profile").unwrap();
        assert!(Scope::parse("profile").unwrap().is_subset(&all));
        assert!(!Scope::parse("email").unwrap().is_subset(&all));
        assert_eq!(all.without("admin").to_string(), "profile");
    }
}
