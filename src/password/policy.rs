//! The password policy: what a new password must be (long enough, not too long, not one of the most
//! common passwords, not the username), and the longest password accepted anywhere.

use std::{collections::HashSet, sync::LazyLock};

use crate::error::Error;

/// The longest password accepted anywhere; longer input is refused before it reaches argon2.
pub const MAX_LENGTH: usize = 128;

/// The 30,000 most common passwords of the xato corpus, as zxcvbn ships them (MIT licence), most
/// frequent first.
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Checks a new password against the policy of the contract; the error names the rule that failed.
pub fn check_policy(password: &str, username: &str, min_length: usize) -> Result<(), Error> {
    let rule = |code: &'static str, description: String| {
        Err(Error::Policy {
            code,
            description: description.into(),
        })
    };
    let length = password.chars().count();
    if length < min_length {
        return rule(
            "password_too_short",
            format!("the password must have at least {min_length} characters"),
        );
    }
    if length > MAX_LENGTH {
        return rule(
            "password_too_long",
            format!("the password must have at most {MAX_LENGTH} characters"),
        );
    }
    let lowered = password.to_lowercase();
    if COMMON.contains(lowered.as_str()) {
        return rule(
            "password_too_common",
            "the password is one of the most common passwords".into(),
        );
    }
    if lowered == username.to_lowercase() {
        return rule(
            "password_is_username",
            "the password must not be the username".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), Error>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn the_policy_names_the_rule_that_failed() {
        assert_eq!(
            code(check_policy("short", "alice", 8)),
            "password_too_short"
        );
        assert_eq!(
            code(check_policy(&"x".repeat(129), "alice", 8)),
            "password_too_long"
        );
        assert_eq!(
            code(check_policy("Password1", "alice", 8)),
            "password_too_common"
        );
        assert_eq!(
            code(check_policy("iloveyou", "alice", 8)),
            "password_too_common"
        );
        assert_eq!(
            code(check_policy("Alice.Liddell", "alice.liddell", 8)),
            "password_is_username"
        );
        assert_eq!(
            code(check_policy("correct horse battery", "alice", 8)),
            "ok"
        );
        // Length is counted in characters, not bytes.
        assert_eq!(
            code(check_policy("ééééééé", "alice", 8)),
            "password_too_short"
        );
    }

    #[test]
    fn the_common_list_has_at_least_ten_thousand_entries() {
        assert!(COMMON.len() >= 10_000, "{}", COMMON.len());
    }
}
