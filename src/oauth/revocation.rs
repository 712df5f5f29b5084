//! Taking tokens back. A session is revoked in the database (its refresh tokens stop working) and on
//! the deny list (its access tokens stop working); a user's revocation also voids every token issued
//! to them before now. One place, so the API, reuse detection and the CLI revoke alike.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use uuid::Uuid;

use super::claims::AccessClaims;
use crate::metrics::{Labels, Metrics};
use crate::{
    error::Error,
    store::{
        deny_list::{DenyList, Entry},
        revocation_feed::RevocationFeed,
        sessions::SessionStore,
    },
};

pub struct Revoker {
    sessions: SessionStore,
    deny: Arc<DenyList>,
    feed: RevocationFeed,
    metrics: Arc<Metrics>,
    /// The longest an access token lives: how long a session's or user's entry must stay listed.
    access_ttl: Duration,
}

impl Revoker {
    pub fn new(
        sessions: SessionStore,
        deny: Arc<DenyList>,
        feed: RevocationFeed,
        access_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sessions,
            deny,
            feed,
            metrics,
            access_ttl,
        }
    }

    /// Writes an entry to the feed, then to the deny list: the feed is what resource servers that verify
    /// locally read, the deny list what this server checks.
    async fn add(&self, entry: Entry<'_>, ttl: Duration) -> Result<(), Error> {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let (kind, value, not_before) = match &entry {
            Entry::Jti(jti) => ("jti", *jti, None),
            Entry::Session(sid) => ("sid", *sid, None),
            Entry::SubjectBefore { sub, not_before } => ("sub", *sub, Some(*not_before)),
        };
        self.feed
            .record(kind, value, not_before, expires_at)
            .await?;
        self.deny.add(entry, ttl).await?;
        Ok(())
    }

    /// Revokes one session; returns whether it was live.
    pub async fn session(&self, id: Uuid, reason: &str) -> Result<bool, Error> {
        let revoked = self.sessions.revoke(id, reason).await?;
        if revoked {
            self.metrics
                .sessions_revoked
                .get_or_create(&Labels {
                    name: static_reason(reason),
                })
                .inc();
        }
        self.deny_session(id).await?;
        Ok(revoked)
    }

    /// Lists a session already revoked in the database on the deny list.
    pub async fn deny_session(&self, id: Uuid) -> Result<(), Error> {
        self.add(Entry::Session(&id.to_string()), self.access_ttl)
            .await
    }

    /// Revokes every session of a user and every access token issued to them before now.
    pub async fn user(&self, user_id: Uuid, reason: &str) -> Result<(), Error> {
        let sessions = self.sessions.revoke_all_of_user(user_id, reason).await?;
        self.metrics
            .sessions_revoked
            .get_or_create(&Labels {
                name: static_reason(reason),
            })
            .inc_by(sessions.len() as u64);
        let sub = user_id.to_string();
        // Tokens carry whole seconds: a token from an earlier second is void by `iat`, one from this
        // second by its session.
        self.add(
            Entry::SubjectBefore {
                sub: &sub,
                not_before: Utc::now().timestamp(),
            },
            self.access_ttl,
        )
        .await?;
        for id in sessions {
            self.deny_session(id).await?;
        }
        Ok(())
    }

    /// Denies one access token until it expires.
    pub async fn access_token(&self, claims: &AccessClaims) -> Result<(), Error> {
        let left = (claims.exp - Utc::now().timestamp()).max(1) as u64;
        self.add(Entry::Jti(&claims.jti), Duration::from_secs(left))
            .await
    }
}

/// Reasons are a closed set of literals; anything else is counted as `other`.
fn static_reason(reason: &str) -> &'static str {
    const KNOWN: [&str; 6] = [
        "logout",
        "logout_everywhere",
        "password_changed",
        "disabled",
        "revoked_by_client",
        "refresh_token_reuse",
    ];
    KNOWN.into_iter().find(|k| *k == reason).unwrap_or("other")
}
