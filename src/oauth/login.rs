//! Signing in with a password, the one way every password is checked (the password grant, the sign-in
//! page, a password change): while failures from an address, or for a username everywhere, delay the
//! next attempt, it is refused before the password is looked at, with the wait to tell the client; an
//! unknown user, a wrong password and a disabled user get the same answer after the same work.

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};

use crate::{
    error::Error,
    metrics::Metrics,
    password::{Hasher, Verified},
    ports::Users,
    throttle::Throttle,
    value::account::User,
};

pub struct LoginGuard {
    throttle: Throttle,
    metrics: Arc<Metrics>,
    users: Arc<dyn Users>,
    hasher: Arc<Hasher>,
    /// `registration.require_verified_email`.
    require_verified_email: bool,
}

impl LoginGuard {
    pub fn new(
        throttle: Throttle,
        metrics: Arc<Metrics>,
        users: Arc<dyn Users>,
        hasher: Arc<Hasher>,
        require_verified_email: bool,
    ) -> Self {
        Self {
            throttle,
            metrics,
            users,
            hasher,
            require_verified_email,
        }
    }

    /// The user whose password this is, or `invalid_grant` alike for an unknown user, a wrong password
    /// and a disabled user: the password is always verified, against a dummy hash when there is no user.
    pub async fn password(
        &self,
        username: &str,
        password: String,
        ip: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<User, Error> {
        self.check(username, ip, now).await?;
        let checked = async {
            let user = self.users.find_by_username(username).await?;
            let stored = user.as_ref().map(|u| u.password_hash.clone());
            let verified = self.hasher.verify(password.clone(), stored).await?;
            Ok::<_, Error>((user, verified))
        };
        let (user, verified) = match checked.await {
            Ok(checked) => checked,
            Err(e) => {
                self.unchecked(username, ip).await;
                return Err(e);
            }
        };
        let refusal = match (&user, &verified) {
            (Some(user), Verified::Match { .. }) if user.is_active => None,
            (None, _) => Some("unknown user"),
            (Some(user), Verified::Mismatch) if user.is_active => Some("wrong password"),
            (Some(_), _) => Some("disabled user"),
        };
        self.record(username, ip, refusal.is_none()).await;
        let Some(user) = user.filter(|_| refusal.is_none()) else {
            return Err(Error::InvalidGrant(refusal.unwrap_or("unknown user")));
        };
        if verified == (Verified::Match { needs_rehash: true }) {
            self.rehash(&user, password).await;
        }
        // Said only to whoever knows the password, so it reveals nothing about the account.
        if self.require_verified_email && !user.email_verified {
            return Err(Error::EmailNotVerified);
        }
        Ok(user)
    }

    /// Stores a hash with current parameters; the login succeeds even if this fails.
    async fn rehash(&self, user: &User, password: String) {
        let result = match self.hasher.hash(password).await {
            Ok(phc) => {
                self.users
                    .update_hash(user.id, user.password_changed_at, phc)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(user = %user.id, error = %e, "could not rehash a password with current parameters");
        }
    }

    /// Refuses the attempt while earlier failures delay it; else admits it, counted as a failure until
    /// [`LoginGuard::record`] or [`LoginGuard::unchecked`] says otherwise, so that attempts sent at once
    /// cannot all pass before any of them is counted.
    pub async fn check(&self, username: &str, ip: IpAddr, now: DateTime<Utc>) -> Result<(), Error> {
        match self
            .throttle
            .admit(username, ip, now.timestamp_millis())
            .await
        {
            Ok(0) => Ok(()),
            Ok(retry_after) => {
                tracing::warn!(%ip, retry_after, "password check throttled after repeated failures");
                Metrics::count(&self.metrics.rejections, "throttle");
                Err(Error::RateLimited { retry_after })
            }
            // Failing open here keeps logins possible while Redis is down; the per-address and
            // per-username rate limits still hold.
            Err(e) => {
                tracing::warn!(error = %e, "throttle unavailable; not applied");
                Ok(())
            }
        }
    }

    /// Settles an admitted attempt by its password check: a failure stays counted and delays the next
    /// ones, a success resets this address's count.
    pub async fn record(&self, username: &str, ip: IpAddr, success: bool) {
        if success && let Err(e) = self.throttle.succeeded(username, ip).await {
            tracing::warn!(error = %e, "throttle unavailable; success not counted");
        }
    }

    /// Settles an admitted attempt whose password could not be checked: it counts for nothing.
    pub async fn unchecked(&self, username: &str, ip: IpAddr) {
        if let Err(e) = self.throttle.unchecked(username, ip).await {
            tracing::warn!(error = %e, "throttle unavailable; unchecked attempt still counted");
        }
    }

    /// Forgets expired in-process counters (Redis expires its own).
    pub fn housekeeping(&self, now: DateTime<Utc>) {
        self.throttle.housekeeping(now.timestamp_millis());
    }
}
