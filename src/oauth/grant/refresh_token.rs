//! The refresh-token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2): every use
//! spends the token and issues its successor in the same session; a spent token presented again
//! revokes the session, except within `refresh.reuse_grace`, where it gets the same successor again.
//!
//! Storage reports facts (spent or not, by which successor, when); what they mean is decided here.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Grants, Issued};
use crate::{
    error::Error,
    oauth::{client::AuthenticatedClient, issuer::Subject, secret},
    ports::{Spend, Spent, later},
    value::scope::Scope,
};

/// Why a rotation was refused; logged, never sent (every refusal is the same `invalid_grant`).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no such refresh token")]
    NotFound,
    #[error("the refresh token belongs to another client")]
    WrongClient,
    #[error("the refresh token is past its idle lifetime")]
    Expired,
    #[error("the session is revoked or past its absolute lifetime")]
    SessionEnded,
    #[error("the user is gone, disabled, or changed their password since the session began")]
    UserInvalid,
    #[error("the requested scope is wider than the token's")]
    InvalidScope,
    /// A spent token was presented again: the session must be revoked.
    #[error("a spent refresh token was presented again")]
    Reused { session: Uuid },
    #[error(transparent)]
    Failed(#[from] Error),
}

/// A rotation that went through.
struct Rotated {
    spent: Spent,
    /// The access token's scope: the token's own, or narrower when asked (RFC 6749 §6).
    scope: Scope,
    /// Whether this answers a retry within the grace window with the successor issued before.
    replayed: bool,
}

impl Grants {
    pub(super) async fn refresh_token(
        &self,
        client: &AuthenticatedClient,
        presented: &str,
        requested: Option<Scope>,
    ) -> Result<Issued, Error> {
        let successor = self.refresh_tokens.successor(presented);
        let rotated = match self
            .rotate(presented, &successor, &client.id, requested)
            .await
        {
            Ok(rotated) => rotated,
            Err(Refused::Failed(e)) => return Err(e),
            Err(Refused::InvalidScope) => return Err(Error::InvalidScope),
            Err(Refused::Reused { session }) => {
                self.metrics.reuse_detections.inc();
                tracing::warn!(sid = %session, client = %client.id, "refresh token reuse: session revoked");
                self.revoker.session(session, "refresh_token_reuse").await?;
                return Err(Error::InvalidGrant("refresh token reuse"));
            }
            Err(other) => {
                tracing::debug!(client = %client.id, reason = %other, "refresh refused");
                return Err(Error::InvalidGrant("refresh token refused"));
            }
        };
        let Rotated {
            spent,
            scope,
            replayed,
        } = rotated;
        let access = self.issuer.access_token(
            Subject::User {
                id: spent.user_id,
                username: &spent.username,
                session: spent.session_id,
            },
            &client.id,
            &scope,
        )?;
        tracing::info!(sid = %spent.session_id, client = %client.id, jti = %access.claims.jti, replayed, "refresh grant");
        Ok(Issued {
            access,
            refresh_token: Some(successor),
            id_token: None,
            scope,
        })
    }

    /// Spends `presented` for `successor`, or finds out why it cannot be.
    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        client_id: &str,
        requested: Option<Scope>,
    ) -> Result<Rotated, Refused> {
        let now = self.clock.now();
        let presented = secret::hash(presented);
        let successor_hash = secret::hash(successor);
        let spend = || Spend {
            presented: &presented,
            successor: &successor_hash,
            client_id,
            now,
            expires_at: later(now, self.lifetimes.refresh_idle),
        };
        // Most rotations present a live token and ask for no narrower scope: one statement checks and
        // spends those. Anything else, and anything it did not spend, takes the path below, which finds
        // out why.
        if requested.is_none()
            && let Some(spent) = self.sessions.spend(spend()).await?
        {
            let scope = spent.scope.clone();
            return Ok(Rotated {
                spent,
                scope,
                replayed: false,
            });
        }
        let token = self
            .sessions
            .refresh_token(&presented)
            .await?
            .ok_or(Refused::NotFound)?;
        let session = &token.session;
        if session.client_id != client_id {
            return Err(Refused::WrongClient);
        }
        if !session.is_live(now) {
            return Err(Refused::SessionEnded);
        }
        let user = match &token.user {
            Some(u) if u.is_active && u.password_changed_at <= session.created_at => u,
            _ => return Err(Refused::UserInvalid),
        };
        // The successor keeps the token's scope; a narrower request narrows this access token only.
        let scope = match requested {
            Some(r) if !r.is_subset(&token.scope) => Err(Refused::InvalidScope),
            Some(r) => Ok(r),
            None => Ok(token.scope.clone()),
        };
        let narrower = scope.as_ref().ok().filter(|_| token.expires_at > now);
        // A narrower request could not be tried before the token's scope was known: it is spent by the
        // same statement now.
        if let Some(narrower) = narrower
            && let Some(spent) = self.sessions.spend(spend()).await?
        {
            return Ok(Rotated {
                spent,
                scope: narrower.clone(),
                replayed: false,
            });
        }
        // Expired, too wide a scope, or spent already; spent is the one that matters, so it is looked up
        // on these rare paths rather than on every rotation.
        let Some(next) = self.sessions.successor(&successor_hash).await? else {
            return Err(if token.expires_at <= now {
                Refused::Expired
            } else {
                scope.err().unwrap_or(Refused::NotFound)
            });
        };
        // Within the grace window a retry gets that same successor while it is live (unexpired, not
        // spent itself), so the session never forks; anything else is reuse.
        if self.within_grace(next.created_at, now)
            && next.session_id == session.id
            && next.expires_at > now
            && !self.is_spent(successor).await?
        {
            return Ok(Rotated {
                spent: Spent {
                    session_id: session.id,
                    user_id: user.id,
                    username: user.username.clone(),
                    scope: token.scope.clone(),
                },
                scope: scope?,
                replayed: true,
            });
        }
        Err(Refused::Reused {
            session: session.id,
        })
    }

    fn within_grace(&self, spent_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let grace = self.lifetimes.reuse_grace;
        !grace.is_zero() && now <= later(spent_at, grace)
    }

    /// Whether `token` has been rotated: its successor exists.
    async fn is_spent(&self, token: &str) -> Result<bool, Error> {
        let next = secret::hash(&self.refresh_tokens.successor(token));
        Ok(self.sessions.successor(&next).await?.is_some())
    }
}
