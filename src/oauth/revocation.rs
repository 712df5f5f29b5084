//! Taking tokens back. Every revocation is written to the database first, in the transaction of the
//! change that causes it (a session revoked, a password changed, a user disabled) together with its
//! entry in the revocation log; the deny list, which the verifier reads, is a copy of that log. So a
//! revocation holds across restarts of the server and of Redis, and reaches every instance: each one
//! follows the log ([`Revoker::follow`]) and rebuilds its copy whenever it may have lost entries.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{
    error::Error,
    metrics::{Labels, Metrics},
    ports::{Clients, Clock, DenyList, RevocationLog, Sessions, Users, later},
    value::{
        claims::AccessClaims,
        revocation::{Entry, Revocation},
    },
};

/// What the revoker writes to and copies into.
pub struct RevokerPorts {
    pub sessions: Arc<dyn Sessions>,
    pub users: Arc<dyn Users>,
    pub clients: Arc<dyn Clients>,
    pub log: Arc<dyn RevocationLog>,
    pub deny: Arc<dyn DenyList>,
    pub clock: Arc<dyn Clock>,
}

pub struct Revoker {
    sessions: Arc<dyn Sessions>,
    users: Arc<dyn Users>,
    clients: Arc<dyn Clients>,
    feed: Arc<dyn RevocationLog>,
    deny: Arc<dyn DenyList>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The longest an access token lives: how long a session's or user's entry must stay listed.
    access_ttl: Duration,
    /// The last log number this instance's deny list holds; `None` until it was filled once.
    cursor: Mutex<Option<i64>>,
}

/// After a failed attempt to bring the deny list up to date, the next waits at least this long.
const RETRY: Duration = Duration::from_secs(1);

impl Revoker {
    pub fn new(ports: RevokerPorts, access_ttl: Duration, metrics: Arc<Metrics>) -> Self {
        let RevokerPorts {
            sessions,
            users,
            clients,
            log,
            deny,
            clock,
        } = ports;
        Self {
            sessions,
            users,
            clients,
            feed: log,
            deny,
            clock,
            metrics,
            access_ttl,
            cursor: Mutex::new(None),
        }
    }

    /// When an access token issued now has expired: until then its revocation must be listed.
    fn until(&self) -> DateTime<Utc> {
        later(self.clock.now(), self.access_ttl)
    }

    /// Revokes one session; returns whether it was live.
    pub async fn session(&self, id: Uuid, reason: &'static str) -> Result<bool, Error> {
        let recorded = self.sessions.revoke(id, reason, self.until()).await?;
        self.count(reason, &recorded);
        self.list(&recorded).await;
        Ok(!recorded.is_empty())
    }

    /// Revokes every session of a user and every access token issued to them before now.
    pub async fn user(&self, user_id: Uuid, reason: &'static str) -> Result<(), Error> {
        let recorded = self
            .sessions
            .revoke_all_of_user(user_id, reason, self.until())
            .await?;
        self.count(reason, &recorded);
        self.list(&recorded).await;
        Ok(())
    }

    /// Ends a browser's sign-in session and revokes every session started through it.
    pub async fn sign_in(&self, id: Uuid) -> Result<(), Error> {
        let recorded = self
            .sessions
            .revoke_sign_in(id, "signed_out", self.until())
            .await?;
        self.count("signed_out", &recorded);
        self.list(&recorded).await;
        Ok(())
    }

    /// Sets a user's new password (its hash) and revokes everything issued to them before it; with
    /// `reset_link`, only by spending that password-reset link in the same transaction.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: String,
        reset_link: Option<&[u8]>,
    ) -> Result<(), Error> {
        let recorded = self
            .users
            .change_password(user_id, password_hash, self.until(), reset_link)
            .await?;
        self.count("password_changed", &recorded);
        self.list(&recorded).await;
        Ok(())
    }

    /// Enables or disables a user; disabling revokes everything issued to them. `false` when there is
    /// no such user.
    pub async fn set_active(&self, user_id: Uuid, active: bool) -> Result<bool, Error> {
        let Some(recorded) = self.users.set_active(user_id, active, self.until()).await? else {
            return Ok(false);
        };
        self.count("disabled", &recorded);
        self.list(&recorded).await;
        Ok(true)
    }

    /// Deletes a client with its sessions, and revokes every token it was issued. `false` when there is
    /// no such client.
    pub async fn delete_client(&self, id: &str) -> Result<bool, Error> {
        let Some(recorded) = self.clients.delete(id, self.until()).await? else {
            return Ok(false);
        };
        self.count("client_deleted", &recorded);
        self.list(&recorded).await;
        Ok(true)
    }

    /// Denies one access token until it expires.
    pub async fn access_token(&self, claims: &AccessClaims) -> Result<(), Error> {
        let recorded = [Revocation {
            entry: Entry::Jti(claims.jti.clone()),
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(|| self.until()),
        }];
        self.feed.record(&recorded).await?;
        self.list(&recorded).await;
        Ok(())
    }

    /// Copies recorded revocations to the deny list. They are in the log already, so a failure here
    /// (Redis down) loses nothing: the copy counts as incomplete, token checks answer `503`, and it is
    /// rebuilt from the log as soon as it can be.
    async fn list(&self, recorded: &[Revocation]) {
        if let Err(e) = self.deny.add(recorded).await {
            tracing::warn!(error = %e, "revocation recorded; the deny list will have it once rebuilt");
        }
    }

    fn count(&self, reason: &'static str, recorded: &[Revocation]) {
        let sessions = recorded
            .iter()
            .filter(|r| matches!(r.entry, Entry::Session(_)))
            .count();
        self.metrics
            .sessions_revoked
            .get_or_create(&Labels { name: reason })
            .inc_by(sessions as u64);
    }

    /// Brings the deny list up to date with the log: every live entry when it may have lost some (the
    /// first time, after Redis restarted, after a failed write), else those added since the last time,
    /// by this instance, another one or the command line.
    pub async fn sync(&self) -> Result<(), Error> {
        let mut cursor = self.cursor.lock().await;
        let rebuild = cursor.is_none() || self.deny.incomplete().await?;
        let started = if rebuild {
            Some(self.deny.begin_rebuild().await?)
        } else {
            None
        };
        let (entries, next) = self
            .feed
            .since(if rebuild { None } else { *cursor }, self.clock.now())
            .await?;
        self.deny.add(&entries).await?;
        self.deny.mark_copied(next, started).await?;
        if rebuild {
            tracing::info!(
                entries = entries.len(),
                "deny list rebuilt from the revocation log"
            );
        }
        *cursor = Some(next);
        Ok(())
    }

    /// Follows the log every `period`, and at once when the deny list was found incomplete.
    pub async fn follow(&self, period: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.deny.rebuild_wanted() => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "could not bring the deny list up to date; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
