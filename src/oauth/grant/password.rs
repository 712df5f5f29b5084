//! The resource owner password credentials grant (RFC 6749 §4.3).
//!
//! An unknown user, a wrong password and a disabled user get the same `invalid_grant` after the same
//! work: the password is always verified, against a dummy hash when there is no user.

use std::net::IpAddr;

use super::{Grants, Issued, resolve_scope};
use crate::{
    error::Error,
    oauth::{client::AuthenticatedClient, issuer::Subject, refresh::RefreshTokens},
    password::Verified,
    ports::{NewSession, later},
    value::{account::User, grant_type::GrantType, scope::Scope},
};

/// Only admin users may hold this scope.
pub const ADMIN_SCOPE: &str = "admin";

impl Grants {
    pub(super) async fn password(
        &self,
        client: &AuthenticatedClient,
        username: &str,
        password: String,
        requested: Option<Scope>,
        ip: IpAddr,
    ) -> Result<Issued, Error> {
        // Checked before the password so that it reveals nothing about the user.
        if let Some(requested) = &requested
            && !requested.is_subset(&client.scopes)
        {
            return Err(Error::InvalidScope);
        }
        let now = self.clock.now();
        self.login.check(username, ip, now).await?;
        let user = self.users.find_by_username(username).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored).await?;
        let refusal = match (&user, &verified) {
            (Some(user), Verified::Match { .. }) if user.is_active => None,
            (None, _) => Some("unknown user"),
            (Some(user), Verified::Mismatch) if user.is_active => Some("wrong password"),
            (Some(_), _) => Some("disabled user"),
        };
        self.login
            .record(username, ip, now, refusal.is_none())
            .await;
        let Some(user) = user.filter(|_| refusal.is_none()) else {
            return Err(Error::InvalidGrant(refusal.unwrap_or("unknown user")));
        };
        if verified == (Verified::Match { needs_rehash: true }) {
            self.rehash(&user, password).await;
        }

        let grantable = if user.is_admin {
            client.scopes.clone()
        } else {
            client.scopes.without(ADMIN_SCOPE)
        };
        let scope = resolve_scope(requested, &grantable)?;
        // A refresh token only for a client that may use it.
        let refresh_token = client
            .may_use(GrantType::RefreshToken)
            .then(RefreshTokens::generate);
        let session = self
            .sessions
            .start(NewSession {
                user: &user,
                client_id: &client.id,
                scope: &scope,
                now,
                expires_at: later(now, self.lifetimes.session),
                refresh: refresh_token.as_deref().map(|t| {
                    (
                        RefreshTokens::hash(t),
                        later(now, self.lifetimes.refresh_idle),
                    )
                }),
            })
            .await?
            // The password was checked against a user who has since changed it or been disabled.
            .ok_or(Error::InvalidGrant("the user changed during the login"))?;
        let access = self.issuer.access_token(
            Subject::User {
                id: user.id,
                username: &user.username,
                session: session.id,
            },
            &client.id,
            &scope,
        )?;
        tracing::info!(user = %user.id, client = %client.id, sid = %session.id, jti = %access.claims.jti, "password grant");
        Ok(Issued {
            access,
            refresh_token,
            scope,
        })
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
}
