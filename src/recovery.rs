//! Account recovery and verified addresses: password reset by a mailed link, email verification, and
//! changing the address. A link carries a single-use token of 256 bits, stored only as its hash; a new
//! link voids the earlier ones of the same purpose; every message about one account counts against one
//! budget per hour, past which nothing more is sent and the answers stay the same.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use crate::{
    accounts::check_email,
    error::Error,
    metrics::Metrics,
    oauth::{revocation::Revoker, secret},
    password::{self, Hasher},
    ports::{
        Clock, CreateUserError, LinkPurpose, LinkToken, LinkTokens, Message, MessageKind, Outbox,
        Users, later,
    },
    value::account::User,
};

pub struct Recovery {
    pub users: Arc<dyn Users>,
    pub links: Arc<dyn LinkTokens>,
    pub outbox: Arc<dyn Outbox>,
    pub revoker: Arc<Revoker>,
    pub hasher: Arc<Hasher>,
    pub clock: Arc<dyn Clock>,
    /// Links point here (the issuer, no trailing slash).
    pub issuer: String,
    pub reset_ttl: Duration,
    pub verification_ttl: Duration,
    /// `rate_limit.mail_per_account`.
    pub per_account: u32,
    /// `password.min_length`.
    pub min_password_length: usize,
    /// Counts the messages the budget held back (`portcullis_mail_messages_total{name="held"}`).
    pub metrics: Arc<Metrics>,
}

/// Whom a password reset is for.
pub enum ResetFor<'a> {
    Email(&'a str),
    Username(&'a str),
}

impl Recovery {
    /// Mails a reset link to the user, if there is one who is active and has an address, and the
    /// account's budget allows. Says nothing either way: the caller answers the same in every case.
    pub async fn request_reset(&self, who: ResetFor<'_>) -> Result<(), Error> {
        let user = match who {
            ResetFor::Email(email) if email.len() <= 254 => self.users.find_by_email(email).await?,
            ResetFor::Username(name) if name.len() <= 64 => {
                self.users.find_by_username(name).await?
            }
            _ => None,
        };
        let Some(user) = user.filter(|u| u.is_active) else {
            return Ok(());
        };
        let Some(to) = user.email.clone() else {
            return Ok(());
        };
        let Some(token) = self.link(&user, LinkPurpose::PasswordReset, None).await? else {
            return Ok(());
        };
        self.outbox.send(Message {
            to,
            username: user.username,
            kind: MessageKind::PasswordReset {
                link: format!("{}/password-reset?token={token}", self.issuer),
                minutes: self.reset_ttl.as_secs().div_ceil(60),
            },
        });
        tracing::info!(user = %user.id, "password-reset link sent");
        Ok(())
    }

    /// The user a reset link is for, while it works; nothing is used up.
    pub async fn reset_link(&self, token: &str) -> Result<User, Error> {
        let found = self
            .links
            .find(
                &token_hash(token)?,
                LinkPurpose::PasswordReset,
                self.clock.now(),
            )
            .await?
            .ok_or(Error::InvalidLinkToken("unknown, expired or used"))?;
        self.users
            .find(found.user_id)
            .await?
            .filter(|u| u.is_active)
            .ok_or(Error::InvalidLinkToken("the user is gone or disabled"))
    }

    /// Sets a new password with a reset link. The policy is checked before the token is used, so a
    /// refused password leaves the link working; the link is spent with the new password, in one
    /// transaction, so a failure to store it leaves the link working too. Like a password change it
    /// revokes every session, sign-in session and access token of the user; it also voids their other
    /// reset links.
    pub async fn confirm_reset(&self, token: &str, new_password: String) -> Result<(), Error> {
        let user = self.reset_link(token).await?;
        password::check_policy(&new_password, &user.username, self.min_password_length)?;
        let hash = self.hasher.hash(new_password).await?;
        let now = self.clock.now();
        self.revoker
            .change_password(user.id, hash, Some(&token_hash(token)?))
            .await?;
        self.links
            .void(user.id, LinkPurpose::PasswordReset, now)
            .await?;
        // The link went to the user's address, so using it proves the address too: a user who lost
        // the verification link (or never got one) recovers by resetting.
        if let Some(email) = &user.email {
            self.users.verify_email(user.id, email).await?;
        }
        tracing::info!(user = %user.id, "password reset; sessions revoked");
        Ok(())
    }

    /// Mails a link that proves the user's address: at registration, on request, after a change.
    /// `Ok(false)` when the account's budget held it back.
    pub async fn send_verification(&self, user: &User) -> Result<bool, Error> {
        let Some(to) = user.email.clone() else {
            return Err(Error::Policy {
                code: "no_email",
                description: "the user has no email address to verify".into(),
            });
        };
        if user.email_verified {
            return Err(Error::Conflict("email_already_verified"));
        }
        let Some(token) = self
            .link(user, LinkPurpose::EmailVerification, Some(to.clone()))
            .await?
        else {
            return Ok(false);
        };
        self.outbox.send(Message {
            to,
            username: user.username.clone(),
            kind: MessageKind::VerifyEmail {
                link: format!("{}/verify-email?token={token}", self.issuer),
                minutes: self.verification_ttl.as_secs().div_ceil(60),
            },
        });
        tracing::info!(user = %user.id, "verification link sent");
        Ok(true)
    }

    /// After registration: a verification link when the user gave an address. A failure to send is
    /// logged; the account exists either way.
    pub async fn welcome(&self, user: &User) {
        if user.email.is_none() || user.email_verified {
            return;
        }
        if let Err(e) = self.send_verification(user).await {
            tracing::warn!(user = %user.id, error = %e, "no verification link sent at registration");
        }
    }

    /// The address a verification link proves, while it works; nothing is used up.
    pub async fn verification_link(&self, token: &str) -> Result<LinkToken, Error> {
        self.links
            .find(
                &token_hash(token)?,
                LinkPurpose::EmailVerification,
                self.clock.now(),
            )
            .await?
            .ok_or(Error::InvalidLinkToken("unknown, expired or used"))
    }

    /// Marks the address verified with a verification link, if it is still the user's address.
    pub async fn confirm_verification(&self, token: &str) -> Result<(), Error> {
        let found = self
            .links
            .spend(
                &token_hash(token)?,
                LinkPurpose::EmailVerification,
                self.clock.now(),
            )
            .await?
            .ok_or(Error::InvalidLinkToken("unknown, expired or used"))?;
        let email = found.email.unwrap_or_default();
        if !self.users.verify_email(found.user_id, &email).await? {
            return Err(Error::InvalidLinkToken("the address changed since"));
        }
        tracing::info!(user = %found.user_id, "email verified");
        Ok(())
    }

    /// Gives the user a new address, unverified: a link goes to it, and a notice to the old one.
    pub async fn change_email(&self, user: &User, email: &str) -> Result<User, Error> {
        check_email(email)?;
        let changed = self
            .users
            .set_email(user.id, email)
            .await
            .map_err(|e| match e {
                CreateUserError::EmailTaken | CreateUserError::UsernameTaken => {
                    Error::Conflict("email_taken")
                }
                CreateUserError::Failed(e) => e,
            })?
            .ok_or(Error::InvalidToken("user is gone"))?;
        // A reset link sent to the old address must not outlive it.
        self.links
            .void(user.id, LinkPurpose::PasswordReset, self.clock.now())
            .await?;
        tracing::info!(user = %user.id, "email changed");
        if let Some(old) = user
            .email
            .clone()
            .filter(|old| !old.eq_ignore_ascii_case(email))
            && self.allowed(user.id).await?
        {
            self.outbox.send(Message {
                to: old,
                username: user.username.clone(),
                kind: MessageKind::EmailChanged {
                    new_email: email.to_owned(),
                },
            });
        }
        self.send_verification(&changed).await?;
        Ok(changed)
    }

    /// A new link of `purpose` for the user, voiding their earlier ones, unless the budget is spent.
    async fn link(
        &self,
        user: &User,
        purpose: LinkPurpose,
        email: Option<String>,
    ) -> Result<Option<String>, Error> {
        if !self.allowed(user.id).await? {
            tracing::info!(user = %user.id, "mail budget of the account spent; nothing sent");
            return Ok(None);
        }
        let ttl = match purpose {
            LinkPurpose::PasswordReset => self.reset_ttl,
            LinkPurpose::EmailVerification => self.verification_ttl,
        };
        let token = secret::generate();
        let now = self.clock.now();
        let bound = LinkToken {
            user_id: user.id,
            email,
        };
        self.links
            .issue(secret::hash(&token), purpose, &bound, now, later(now, ttl))
            .await?;
        Ok(Some(token))
    }

    /// Counts one message about the user against the budget; whether it may go.
    async fn allowed(&self, user_id: Uuid) -> Result<bool, Error> {
        let allowed = self
            .links
            .allow_message(user_id, self.clock.now(), self.per_account)
            .await?;
        if !allowed {
            Metrics::count(&self.metrics.mail, "held");
        }
        Ok(allowed)
    }
}

/// The hash a link's token is stored by; a token that cannot be one of ours is refused before any
/// lookup.
fn token_hash(token: &str) -> Result<Vec<u8>, Error> {
    let plausible = token.len() == secret::LENGTH
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plausible {
        Ok(secret::hash(token))
    } else {
        Err(Error::InvalidLinkToken("not a token of ours"))
    }
}
