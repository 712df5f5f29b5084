//! Users: accounts, their password hashes and their state.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};
use uuid::Uuid;

use async_trait::async_trait;

use super::{Db, Unique, sessions::revoke_all_in};
use crate::value::revocation::Revocation;
use crate::{
    entity::user,
    error::Error,
    ports::{self, CreateUserError, LinkPurpose, NewUser},
    value::account::User,
};

#[derive(Clone)]
pub struct UserStore {
    db: Db,
}

impl UserStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ports::Users for UserStore {
    async fn find(&self, id: Uuid) -> Result<Option<User>, Error> {
        Ok(user::Entity::find_by_id(id)
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn is_active(&self, id: Uuid) -> Result<bool, Error> {
        let active: Option<bool> = user::Entity::find_by_id(id)
            .select_only()
            .column(user::Column::IsActive)
            .into_tuple()
            .unique(self.db.reader())
            .await?;
        Ok(active == Some(true))
    }

    /// Case-insensitive lookup by username.
    async fn find_by_username(&self, name: &str) -> Result<Option<User>, Error> {
        Ok(user::Entity::find()
            .filter(user::Column::UsernameKey.eq(name.to_ascii_lowercase()))
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        Ok(user::Entity::find()
            .filter(user::Column::EmailKey.eq(email.to_lowercase()))
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn set_email(&self, id: Uuid, email: &str) -> Result<Option<User>, CreateUserError> {
        let changed = user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(email))
            .col_expr(user::Column::EmailKey, Expr::value(email.to_lowercase()))
            .col_expr(user::Column::EmailVerified, Expr::value(false))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .exec(self.db.writer())
            .await
            .map_err(|e| match super::unique_violation(&e) {
                Some(_) => CreateUserError::EmailTaken,
                None => CreateUserError::Failed(e.into()),
            })?;
        if changed.rows_affected == 0 {
            return Ok(None);
        }
        ports::Users::find(self, id)
            .await
            .map_err(CreateUserError::Failed)
    }

    async fn verify_email(&self, id: Uuid, email: &str) -> Result<bool, Error> {
        let marked = user::Entity::update_many()
            .col_expr(user::Column::EmailVerified, Expr::value(true))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::EmailKey.eq(email.to_lowercase()))
            .exec(self.db.writer())
            .await?;
        Ok(marked.rows_affected == 1)
    }

    /// Users in creation order; `None` lists them all.
    async fn list(&self, limit: Option<u64>, offset: u64) -> Result<Vec<User>, Error> {
        let mut query = user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id);
        // SQLite accepts OFFSET only after a LIMIT.
        if let Some(limit) = limit {
            query = query.limit(limit).offset(offset);
        }
        Ok(query
            .all(self.db.reader())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Inserts a user; the unique indexes, not a prior read, decide whether the name or the email (each
    /// regardless of case) is taken, so two concurrent registrations of one name cannot both succeed.
    async fn create(&self, new: NewUser<'_>) -> Result<User, CreateUserError> {
        let now = Utc::now();
        let model = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(new.username.as_str().to_owned()),
            username_key: Set(new.username.key()),
            email: Set(new.email.map(str::to_owned)),
            // Computed as migration m20261206_000006 computed the existing rows' keys.
            email_key: Set(new.email.map(str::to_lowercase)),
            email_verified: Set(new.email_verified),
            password_hash: Set(new.password_hash),
            is_active: Set(true),
            is_admin: Set(new.is_admin),
            password_changed_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        };
        model
            .insert(self.db.writer())
            .await
            .map_err(|e| match super::unique_violation(&e) {
                Some(detail) if detail.contains("email") => CreateUserError::EmailTaken,
                Some(_) => CreateUserError::UsernameTaken,
                None => CreateUserError::Failed(e.into()),
            })
            .map(Into::into)
    }

    /// Replaces the hash of an unchanged password (a rehash with current parameters), only while the
    /// password is still the one verified: a change committed meanwhile must not be undone.
    async fn update_hash(
        &self,
        id: Uuid,
        verified: DateTime<Utc>,
        password_hash: String,
    ) -> Result<(), Error> {
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .filter(user::Column::PasswordChangedAt.eq(verified))
            .exec(self.db.writer())
            .await?;
        Ok(())
    }

    /// Enables or disables a user; `None` when there is no such user. Disabling revokes every session and
    /// token of theirs in the same transaction; `until` is when their last access token expires.
    async fn set_active(
        &self,
        id: Uuid,
        active: bool,
        until: DateTime<Utc>,
    ) -> Result<Option<Vec<Revocation>>, Error> {
        let txn = super::begin_write(&self.db).await?;
        let res = user::Entity::update_many()
            .col_expr(user::Column::IsActive, Expr::value(active))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Ok(None);
        }
        let recorded = if active {
            Vec::new()
        } else {
            revoke_all_in(&txn, id, "disabled", until).await?
        };
        txn.commit().await?;
        Ok(Some(recorded))
    }

    /// Sets a new password and, in the same transaction, revokes every session and token of the user
    /// issued before it.
    async fn change_password(
        &self,
        id: Uuid,
        password_hash: String,
        until: DateTime<Utc>,
        reset_link: Option<&[u8]>,
    ) -> Result<Vec<Revocation>, Error> {
        let now = Utc::now();
        let txn = super::begin_write(&self.db).await?;
        if let Some(hash) = reset_link
            && !super::links::spend_in(&txn, hash, LinkPurpose::PasswordReset, Some(id), now)
                .await?
        {
            return Err(Error::InvalidLinkToken("used or expired meanwhile"));
        }
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(user::Column::PasswordChangedAt, Expr::value(now))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        let recorded = revoke_all_in(&txn, id, "password_changed", until).await?;
        txn.commit().await?;
        Ok(recorded)
    }
}
