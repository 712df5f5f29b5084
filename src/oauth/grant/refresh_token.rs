//! The refresh-token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2): every use
//! spends the token and issues its successor in the same session; a spent token presented again
//! revokes the session, except within `refresh.reuse_grace`, where it gets the same successor again.

use super::Issued;
use crate::{
    error::Error,
    oauth::{client::AuthenticatedClient, issuer::Subject, refresh::RefreshTokens},
    state::AppState,
    store::sessions::{RotateError, Successor},
    value::scope::Scope,
};

pub async fn handle(
    state: &AppState,
    client: &AuthenticatedClient,
    presented: &str,
    requested: Option<Scope>,
) -> Result<Issued, Error> {
    let successor = state.refresh_tokens.successor(presented);
    let hashes = Successor {
        hash: RefreshTokens::hash(&successor),
        next_hash: RefreshTokens::hash(&state.refresh_tokens.successor(&successor)),
    };
    let rotated = state
        .sessions
        .rotate(
            &RefreshTokens::hash(presented),
            &hashes,
            &client.id,
            requested.as_ref(),
            state.settings.refresh_rules(),
        )
        .await;
    let rotated = match rotated {
        Ok(r) => r,
        Err(RotateError::InvalidScope) => return Err(Error::InvalidScope),
        Err(RotateError::Reused { session }) => {
            state.metrics.reuse_detections.inc();
            tracing::warn!(sid = %session, client = %client.id, "refresh token reuse: session revoked");
            state
                .revoker
                .session(session, "refresh_token_reuse")
                .await?;
            return Err(Error::InvalidGrant("refresh token reuse"));
        }
        Err(RotateError::Db(e)) => return Err(e.into()),
        Err(other) => {
            tracing::debug!(client = %client.id, reason = %other, "refresh refused");
            return Err(Error::InvalidGrant("refresh token refused"));
        }
    };
    let access = state.issuer.access_token(
        Subject::User {
            id: rotated.user_id,
            username: &rotated.username,
            session: rotated.session_id,
        },
        &client.id,
        &rotated.scope,
    )?;
    tracing::info!(sid = %rotated.session_id, client = %client.id, jti = %access.claims.jti, replayed = rotated.replayed, "refresh grant");
    Ok(Issued {
        access,
        refresh_token: Some(successor),
        scope: rotated.scope,
    })
}
