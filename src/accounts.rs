//! Account flows shared by the HTTP API and the command line, so that a rule holds however an account
//! is made or changed. Revocations caused by account changes are the [`crate::oauth::revocation`]'s.

use crate::{
    entity::user,
    error::Error,
    password::{self, Hasher},
    store::users::{CreateUserError, NewUser, UserStore},
    value::username::Username,
};

/// What registration asks for.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: String,
    /// Empty counts as none.
    pub email: Option<&'a str>,
    pub is_admin: bool,
}

/// Creates an account under the contract's rules: a valid username, a plausible email, a password the
/// policy accepts (`min_length` is `password.min_length`), hashed; a taken username or email is a
/// `409`. The unique indexes, not a prior read, decide what is taken.
pub async fn register(
    users: &UserStore,
    hasher: &Hasher,
    min_length: usize,
    new: NewAccount<'_>,
) -> Result<user::Model, Error> {
    let username = Username::parse(new.username)?;
    let email = new.email.filter(|e| !e.is_empty());
    if let Some(email) = email {
        check_email(email)?;
    }
    password::check_policy(&new.password, username.as_str(), min_length)?;
    let password_hash = hasher.hash(new.password).await?;
    let created = users
        .create(NewUser {
            username: &username,
            email,
            password_hash,
            is_admin: new.is_admin,
        })
        .await
        .map_err(|e| match e {
            CreateUserError::UsernameTaken => Error::Conflict("username_taken"),
            CreateUserError::EmailTaken => Error::Conflict("email_taken"),
            CreateUserError::Db(e) => e.into(),
        })?;
    tracing::info!(user = %created.id, admin = created.is_admin, "registered");
    Ok(created)
}

/// A plausibility check only; an address is proven by mail, which this server does not send yet.
fn check_email(email: &str) -> Result<(), Error> {
    let plausible = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if plausible {
        Ok(())
    } else {
        Err(Error::Policy {
            code: "invalid_email",
            description: "the email address is not valid".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_must_look_like_one() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@localhost",
            "a b@example.com",
            "a\r\n@x.io",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(250))).is_err());
        assert!(check_email("alice@example.com").is_ok());
    }
}
