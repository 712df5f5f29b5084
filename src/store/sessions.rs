//! Sessions: one login, the family of refresh tokens it issues, and the `sid` of its access tokens.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ActiveModelTrait, DatabaseConnection, Set};
use uuid::Uuid;

use crate::{entity::session, oauth::scope::Scope};

#[derive(Clone)]
pub struct SessionStore {
    db: DatabaseConnection,
}

impl SessionStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Starts a session that ends at the latest after `absolute_ttl`.
    pub async fn create(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &Scope,
        absolute_ttl: Duration,
    ) -> Result<session::Model, sea_orm::DbErr> {
        let now = Utc::now();
        session::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(user_id),
            client_id: Set(client_id.to_owned()),
            scope: Set(scope.to_string()),
            created_at: Set(now),
            last_used_at: Set(now),
            expires_at: Set(
                now + chrono::Duration::from_std(absolute_ttl).unwrap_or(chrono::Duration::MAX)
            ),
            revoked_at: Set(None),
            revoked_reason: Set(None),
        }
        .insert(&self.db)
        .await
    }
}
