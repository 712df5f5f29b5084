//! Clients: who may ask for tokens, with which grants and scopes.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, QueryOrder, Set};

use crate::{
    entity::client,
    oauth::{client::GrantType, scope::Scope},
};

#[derive(Clone)]
pub struct ClientStore {
    db: DatabaseConnection,
}

pub struct NewClient<'a> {
    pub id: &'a str,
    pub secret_hash: Option<Vec<u8>>,
    pub grant_types: &'a [GrantType],
    pub scopes: &'a Scope,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateClientError {
    #[error("a client with this id exists")]
    Exists,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

impl ClientStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn find(&self, id: &str) -> Result<Option<client::Model>, sea_orm::DbErr> {
        client::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
    }

    pub async fn list(&self) -> Result<Vec<client::Model>, sea_orm::DbErr> {
        client::Entity::find()
            .order_by_asc(client::Column::ClientId)
            .all(&self.db)
            .await
    }

    pub async fn create(&self, new: NewClient<'_>) -> Result<client::Model, CreateClientError> {
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
            created_at: Set(Utc::now()),
        };
        model.insert(&self.db).await.map_err(|e| {
            if super::unique_violation(&e).is_some() {
                CreateClientError::Exists
            } else {
                CreateClientError::Db(e)
            }
        })
    }

    /// Deletes a client and, through the foreign keys, its sessions. Returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, sea_orm::DbErr> {
        let res = client::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Creates the default public client if it is missing; an existing one is left as its operator
    /// made it. Safe when several instances start at once.
    pub async fn ensure_default(&self, id: &str, scopes: &Scope) -> Result<(), sea_orm::DbErr> {
        if self.find(id).await?.is_some() {
            return Ok(());
        }
        let new = NewClient {
            id,
            secret_hash: None,
            grant_types: &[GrantType::Password, GrantType::RefreshToken],
            scopes,
        };
        match self.create(new).await {
            Ok(_) | Err(CreateClientError::Exists) => Ok(()),
            Err(CreateClientError::Db(e)) => Err(e),
        }
    }
}
