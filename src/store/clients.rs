//! Clients: who may ask for tokens, with which grants and scopes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use async_trait::async_trait;

use super::{Db, Unique, revocation_feed::append};
use crate::value::revocation::Revocation;
use crate::{
    entity::{client, session},
    error::Error,
    ports::{self, CreateClientError, NewClient},
    value::{account::Client, grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope},
};

#[derive(Clone)]
pub struct ClientStore {
    db: Db,
    recent: Arc<Mutex<Recent>>,
}

/// Each client's row by id, with when it was read; shared, so that a hit holds the lock only to count a
/// reference.
type Recent = HashMap<String, (Instant, Arc<Client>)>;

/// How long an authenticated client's row is reused: a deleted client takes effect within this time on
/// every instance. A second keeps a busy client's reads to one a second, and is shorter than an operator
/// takes to run `clients delete` and try the client again.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Known clients only are cached, so this bound is reached only by an installation with this many
/// clients in use at once; past it the cache starts over.
const CACHE_MAX: usize = 4096;

impl ClientStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            recent: Arc::default(),
        }
    }

    /// Creates the default public client if it is missing; an existing one is left as its operator
    /// made it. Safe when several instances start at once.
    pub async fn ensure_default(&self, id: &str, scopes: &Scope) -> Result<(), Error> {
        use ports::Clients;
        if self.find(id).await?.is_some() {
            return Ok(());
        }
        let new = NewClient {
            id,
            secret_hash: None,
            grant_types: &[GrantType::Password, GrantType::RefreshToken],
            scopes,
            redirect_uris: &[],
            post_logout_redirect_uris: &[],
        };
        match self.create(new).await {
            Ok(_) | Err(CreateClientError::Exists) => Ok(()),
            Err(CreateClientError::Failed(e)) => Err(e),
        }
    }
}

#[async_trait]
impl ports::Clients for ClientStore {
    /// `find`, reusing a known client's row for [`CACHE_TTL`] when `usable` accepts it:
    /// a row the presented credentials do not fit may be older than the client's current one (deleted
    /// and created again with a new secret), so the database decides those.
    async fn find_recent(
        &self,
        id: &str,
        usable: &(dyn for<'c> Fn(&'c Client) -> bool + Send + Sync),
    ) -> Result<Option<Client>, Error> {
        let cached = self
            .recent
            .lock()
            .expect("client cache lock")
            .get(id)
            .cloned();
        if let Some((at, client)) = cached
            && at.elapsed() < CACHE_TTL
            && usable(&client)
        {
            return Ok(Some(Client::clone(&client)));
        }
        // Aged from before the read, so a row read just before its client was deleted still leaves
        // the cache within CACHE_TTL of the deletion.
        let read_at = Instant::now();
        let found = self.find(id).await?;
        let mut recent = self.recent.lock().expect("client cache lock");
        // A read that a later one overtook must not put back what that one replaced.
        if recent.get(id).is_some_and(|(at, _)| *at > read_at) {
            return Ok(found);
        }
        match &found {
            Some(model) => {
                if recent.len() >= CACHE_MAX {
                    recent.clear();
                }
                recent.insert(id.to_owned(), (read_at, Arc::new(model.clone())));
            }
            None => {
                recent.remove(id);
            }
        }
        Ok(found)
    }

    async fn find(&self, id: &str) -> Result<Option<Client>, Error> {
        Ok(client::Entity::find_by_id(id.to_owned())
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn list(&self) -> Result<Vec<Client>, Error> {
        Ok(client::Entity::find()
            .order_by_asc(client::Column::ClientId)
            .all(self.db.reader())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn create(&self, new: NewClient<'_>) -> Result<Client, CreateClientError> {
        let model = client::ActiveModel {
            client_id: Set(new.id.to_owned()),
            is_public: Set(new.secret_hash.is_none()),
            secret_hash: Set(new.secret_hash),
            grant_types: Set(new
                .grant_types
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(" ")),
            scopes: Set(new.scopes.to_string()),
            redirect_uris: Set(space_separated(new.redirect_uris)),
            post_logout_redirect_uris: Set(space_separated(new.post_logout_redirect_uris)),
            created_at: Set(Utc::now()),
        };
        model
            .insert(self.db.writer())
            .await
            .map(Into::into)
            .map_err(|e| {
                if super::unique_violation(&e).is_some() {
                    CreateClientError::Exists
                } else {
                    CreateClientError::Failed(e.into())
                }
            })
    }

    /// Deletes a client and, through the foreign keys, its sessions, recording in the same transaction
    /// the revocation of every token it was issued: its live sessions' (`sid`) and its own
    /// client_credentials tokens (`sub`, the client id). `until` is when its last access token expires;
    /// `None` when there was no such client.
    async fn delete(
        &self,
        id: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Vec<Revocation>>, Error> {
        let txn = super::begin_write(&self.db).await?;
        // The client's row locked first (PostgreSQL): a login naming it waits on its foreign key until
        // the deletion commits, so no session appears between the listing and the deletion.
        client::Entity::find_by_id(id.to_owned())
            .lock_exclusive()
            .all(&txn)
            .await?;
        let live: Vec<uuid::Uuid> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(session::Column::ClientId.eq(id))
            .filter(session::Column::RevokedAt.is_null())
            .into_tuple()
            .all(&txn)
            .await?;
        let res = client::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await?;
        if res.rows_affected != 1 {
            return Ok(None);
        }
        // Its own tokens from before now, and from the moment a cached row may still issue them.
        let not_before = Utc::now().timestamp() + CACHE_TTL.as_secs() as i64 + 1;
        let recorded = Revocation::subject_and_sessions(id.to_owned(), not_before, live, until);
        append(&txn, &recorded).await?;
        txn.commit().await?;
        Ok(Some(recorded))
    }
}

/// The column's form of a list of URIs; a registered URI holds no space.
fn space_separated(uris: &[RedirectUri]) -> String {
    uris.iter()
        .map(RedirectUri::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
