//! Users: accounts, their password hashes and their state.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::Unique;
use crate::{entity::user, oauth::username::Username};

#[derive(Clone)]
pub struct UserStore {
    db: DatabaseConnection,
}

pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: Option<&'a str>,
    pub password_hash: String,
    pub is_admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("the username is taken")]
    UsernameTaken,
    #[error("the email is taken")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

impl UserStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<user::Model>, sea_orm::DbErr> {
        user::Entity::find_by_id(id).unique(&self.db).await
    }

    /// Case-insensitive lookup by username.
    pub async fn find_by_username(
        &self,
        name: &str,
    ) -> Result<Option<user::Model>, sea_orm::DbErr> {
        user::Entity::find()
            .filter(user::Column::UsernameKey.eq(name.to_ascii_lowercase()))
            .unique(&self.db)
            .await
    }

    /// Users in creation order; `None` lists them all.
    pub async fn list(
        &self,
        limit: Option<u64>,
        offset: u64,
    ) -> Result<Vec<user::Model>, sea_orm::DbErr> {
        let mut query = user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id);
        // SQLite accepts OFFSET only after a LIMIT.
        if let Some(limit) = limit {
            query = query.limit(limit).offset(offset);
        }
        query.all(&self.db).await
    }

    /// Inserts a user; the unique indexes, not a prior read, decide whether the name or the email (each
    /// regardless of case) is taken, so two concurrent registrations of one name cannot both succeed.
    pub async fn create(&self, new: NewUser<'_>) -> Result<user::Model, CreateUserError> {
        let now = Utc::now();
        let model = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(new.username.as_str().to_owned()),
            username_key: Set(new.username.key()),
            email: Set(new.email.map(str::to_owned)),
            // Computed as migration m20261206_000006 computed the existing rows' keys.
            email_key: Set(new.email.map(str::to_lowercase)),
            password_hash: Set(new.password_hash),
            is_active: Set(true),
            is_admin: Set(new.is_admin),
            password_changed_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        };
        model
            .insert(&self.db)
            .await
            .map_err(|e| match super::unique_violation(&e) {
                Some(detail) if detail.contains("email") => CreateUserError::EmailTaken,
                Some(_) => CreateUserError::UsernameTaken,
                None => CreateUserError::Db(e),
            })
    }

    /// Replaces the hash of an unchanged password (a rehash with current parameters).
    pub async fn update_hash(&self, id: Uuid, password_hash: String) -> Result<(), sea_orm::DbErr> {
        user::ActiveModel {
            id: Set(id),
            password_hash: Set(password_hash),
            updated_at: Set(Utc::now()),
            ..Default::default()
        }
        .update(&self.db)
        .await
        .map(drop)
    }

    /// Enables or disables a user; `None` when there is no such user.
    pub async fn set_active(
        &self,
        id: Uuid,
        active: bool,
    ) -> Result<Option<user::Model>, sea_orm::DbErr> {
        if self.find(id).await?.is_none() {
            return Ok(None);
        }
        let model = user::ActiveModel {
            id: Set(id),
            is_active: Set(active),
            updated_at: Set(Utc::now()),
            ..Default::default()
        }
        .update(&self.db)
        .await?;
        Ok(Some(model))
    }

    /// Sets a new password; sessions that began before now can no longer refresh.
    pub async fn change_password(
        &self,
        id: Uuid,
        password_hash: String,
    ) -> Result<(), sea_orm::DbErr> {
        let now = Utc::now();
        user::ActiveModel {
            id: Set(id),
            password_hash: Set(password_hash),
            password_changed_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .update(&self.db)
        .await
        .map(drop)
    }
}
