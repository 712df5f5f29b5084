//! The resource owner password credentials grant (RFC 6749 §4.3).
//!
//! An unknown user, a wrong password and a disabled user get the same `invalid_grant` after the same
//! work: the password is always verified, against a dummy hash when there is no user.

use std::net::IpAddr;

use chrono::Utc;

use super::{Issued, resolve_scope};
use crate::{
    error::Error,
    oauth::{client::AuthenticatedClient, issuer::Subject, refresh::RefreshTokens},
    password::Verified,
    state::AppState,
    value::{grant_type::GrantType, scope::Scope},
};

/// Only admin users may hold this scope.
pub const ADMIN_SCOPE: &str = "admin";

pub async fn handle(
    state: &AppState,
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
    let now = Utc::now().timestamp_millis();
    throttled(state, username, ip, now).await?;
    let user = state.users.find_by_username(username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state.hasher.verify(password.clone(), stored).await?;
    let refusal = match (&user, &verified) {
        (Some(user), Verified::Match { .. }) if user.is_active => None,
        (None, _) => Some("unknown user"),
        (Some(user), Verified::Mismatch) if user.is_active => Some("wrong password"),
        (Some(_), _) => Some("disabled user"),
    };
    record_attempt(state, username, ip, now, refusal.is_none()).await;
    let Some(user) = user.filter(|_| refusal.is_none()) else {
        return Err(Error::InvalidGrant(refusal.unwrap_or("unknown user")));
    };
    if verified == (Verified::Match { needs_rehash: true }) {
        rehash(state, &user, password).await;
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
    let session = state
        .sessions
        .start(
            &user,
            &client.id,
            &scope,
            state.settings.refresh_absolute_ttl(),
            refresh_token.as_deref().map(|t| {
                (
                    RefreshTokens::hash(t),
                    state.settings.refresh_rules().idle_ttl,
                )
            }),
        )
        .await?
        // The password was checked against a user who has since changed it or been disabled.
        .ok_or(Error::InvalidGrant("the user changed during the login"))?;
    let access = state.issuer.access_token(
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

/// Login protection before a password is checked: while failures from this address (or for this
/// username everywhere) delay it, the attempt is refused without checking the password. Times are
/// milliseconds since the epoch.
pub async fn throttled(
    state: &AppState,
    username: &str,
    ip: IpAddr,
    now: i64,
) -> Result<(), Error> {
    match state.throttle.wait(username, ip, now).await {
        Ok(0) => Ok(()),
        Ok(retry_after) => {
            tracing::warn!(%ip, retry_after, "password check throttled after repeated failures");
            crate::metrics::Metrics::count(&state.metrics.rejections, "throttle");
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

/// Counts a password check for login protection: a failure delays the next ones, a success resets
/// this address's count.
pub async fn record_attempt(state: &AppState, username: &str, ip: IpAddr, now: i64, success: bool) {
    let result = if success {
        state.throttle.succeeded(username, ip).await
    } else {
        state.throttle.failed(username, ip, now).await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "throttle unavailable; attempt not counted");
    }
}

/// Stores a hash with current parameters; the login succeeds even if this fails.
async fn rehash(state: &AppState, user: &crate::entity::user::Model, password: String) {
    let result = match state.hasher.hash(password).await {
        Ok(phc) => state
            .users
            .update_hash(user.id, user.password_changed_at, phc)
            .await
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(user = %user.id, error = %e, "could not rehash a password with current parameters");
    }
}
