//! Usernames: 3 to 64 of `A-Z a-z 0-9 . _ -`, unique regardless of case.

use std::fmt;

use crate::error::Error;

pub const MAX_LENGTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !(3..=MAX_LENGTH).contains(&raw.len()) || !valid_chars {
            return Err(Error::Policy {
                code: "invalid_username",
                description: "a username is 3 to 64 of A-Z a-z 0-9 . _ -".into(),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form the uniqueness index holds.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_and_lengths() {
        assert!(Username::parse("a.b_c-9").is_ok());
        assert!(Username::parse(&"x".repeat(64)).is_ok());
        for bad in ["ab", &"x".repeat(65), "a b", "ali@ce", "ålice", ""] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Username::parse("Alice").unwrap().key(), "alice");
    }
}
