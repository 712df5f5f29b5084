//! The resource owner password credentials grant (RFC 6749 §4.3).
//!
//! An unknown user, a wrong password and a disabled user get the same `invalid_grant` after the same
//! work: the password is always verified, against a dummy hash when there is no user.

use std::net::IpAddr;

use chrono::Utc;

use super::{Issued, resolve_scope};
use crate::{
    error::Error,
    oauth::{
        client::{AuthenticatedClient, GrantType},
        issuer::Subject,
        refresh::RefreshTokens,
        scope::Scope,
    },
    password::Verified,
    state::AppState,
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
    // While delayed, the password is not even checked.
    let now = Utc::now().timestamp_millis();
    match state.throttle.wait(username, ip, now).await {
        Ok(0) => {}
        Ok(retry_after) => {
            tracing::warn!(%ip, retry_after, "password grant throttled after repeated failures");
            crate::metrics::Metrics::count(&state.metrics.rejections, "throttle");
            return Err(Error::RateLimited { retry_after });
        }
        // Failing open here keeps logins possible while Redis is down; the per-address and
        // per-username rate limits still hold.
        Err(e) => tracing::warn!(error = %e, "throttle unavailable; not applied"),
    }
    let user = state.users.find_by_username(username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = state.hasher.verify(password.clone(), stored).await?;
    let refusal = match (&user, &verified) {
        (Some(user), Verified::Match { .. }) if user.is_active => None,
        (None, _) => Some("unknown user"),
        (Some(user), Verified::Mismatch) if user.is_active => Some("wrong password"),
        (Some(_), _) => Some("disabled user"),
    };
    let Some(user) = user.filter(|_| refusal.is_none()) else {
        if let Err(e) = state.throttle.failed(username, ip, now).await {
            tracing::warn!(error = %e, "throttle unavailable; failure not counted");
        }
        return Err(Error::InvalidGrant(refusal.unwrap_or("unknown user")));
    };
    if let Err(e) = state.throttle.succeeded(username, ip).await {
        tracing::warn!(error = %e, "throttle unavailable; counter not reset");
    }
    if verified == (Verified::Match { needs_rehash: true }) {
        rehash(state, user.id, password).await;
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
            user.id,
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
        .await?;
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

/// Stores a hash with current parameters; the login succeeds even if this fails.
async fn rehash(state: &AppState, user: uuid::Uuid, password: String) {
    let result = match state.hasher.hash(password).await {
        Ok(phc) => state
            .users
            .update_hash(user, phc)
            .await
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(%user, error = %e, "could not rehash a password with current parameters");
    }
}
