//! The tokens of mailed links and the count of messages per account, as [`ports::LinkTokens`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, QueryTrait, Set,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{Db, Unique};
use crate::{
    entity::{account_mail, account_token, user},
    error::Error,
    ports::{self, LinkPurpose, LinkToken},
};

#[derive(Clone)]
pub struct LinkStore {
    db: Db,
}

impl LinkStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// Marks the token used if it is an unused, unexpired token of `purpose` (and of `owner`, when given),
/// inside `db`; whether it was. One conditional update, so of concurrent uses exactly one succeeds.
pub(super) async fn spend_in(
    db: &impl sea_orm::ConnectionTrait,
    hash: &[u8],
    purpose: LinkPurpose,
    owner: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool, sea_orm::DbErr> {
    use account_token::Column as T;
    Ok(account_token::Entity::update_many()
        .col_expr(T::UsedAt, Expr::value(now))
        .filter(T::TokenHash.eq(hash.to_vec()))
        .filter(T::Purpose.eq(purpose.as_str()))
        .apply_if(owner, |update, id| update.filter(T::UserId.eq(id)))
        .filter(T::UsedAt.is_null())
        .filter(T::ExpiresAt.gt(now))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// Marks the user's unused tokens of `purpose` used, inside `db`.
async fn void_in(
    db: &impl sea_orm::ConnectionTrait,
    user_id: Uuid,
    purpose: LinkPurpose,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    use account_token::Column as T;
    account_token::Entity::update_many()
        .col_expr(T::UsedAt, Expr::value(now))
        .filter(T::UserId.eq(user_id))
        .filter(T::Purpose.eq(purpose.as_str()))
        .filter(T::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

#[async_trait]
impl ports::LinkTokens for LinkStore {
    async fn issue(
        &self,
        hash: Vec<u8>,
        purpose: LinkPurpose,
        token: &LinkToken,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let txn = super::begin_write(&self.db).await?;
        void_in(&txn, token.user_id, purpose, now).await?;
        account_token::Entity::insert(account_token::ActiveModel {
            token_hash: Set(hash),
            user_id: Set(token.user_id),
            purpose: Set(purpose.as_str().to_owned()),
            email: Set(token.email.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn find(
        &self,
        hash: &[u8],
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkToken>, Error> {
        use account_token::Column as T;
        Ok(account_token::Entity::find()
            .filter(T::TokenHash.eq(hash.to_vec()))
            .filter(T::Purpose.eq(purpose.as_str()))
            .filter(T::UsedAt.is_null())
            .filter(T::ExpiresAt.gt(now))
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn spend(
        &self,
        hash: &[u8],
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<LinkToken>, Error> {
        if !spend_in(self.db.writer(), hash, purpose, None, now).await? {
            return Ok(None);
        }
        Ok(account_token::Entity::find_by_id(hash.to_vec())
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn void(
        &self,
        user_id: Uuid,
        purpose: LinkPurpose,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        void_in(self.db.writer(), user_id, purpose, now).await?;
        Ok(())
    }

    /// Counted in the database, so the budget holds across every instance, with or without Redis. The
    /// user's row is locked (PostgreSQL; SQLite has one writer) so that concurrent requests cannot both
    /// take the last message.
    async fn allow_message(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        per_hour: u32,
    ) -> Result<bool, Error> {
        use account_mail::Column as M;
        let txn = super::begin_write(&self.db).await?;
        user::Entity::find_by_id(user_id)
            .lock_exclusive()
            .one(&txn)
            .await?;
        let sent = account_mail::Entity::find()
            .filter(M::UserId.eq(user_id))
            .filter(M::SentAt.gt(now - chrono::Duration::hours(1)))
            .count(&txn)
            .await?;
        if sent >= u64::from(per_hour) {
            return Ok(false);
        }
        account_mail::Entity::insert(account_mail::ActiveModel {
            user_id: Set(user_id),
            sent_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }
}
