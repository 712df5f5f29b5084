//! The revocation feed's rows: every revocation, numbered; the number is the feed's cursor.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::entity::revocation;

#[derive(Clone)]
pub struct RevocationFeed {
    db: DatabaseConnection,
}

impl RevocationFeed {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub async fn record(
        &self,
        kind: &str,
        value: &str,
        not_before: Option<i64>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        revocation::ActiveModel {
            kind: Set(kind.to_owned()),
            value: Set(value.to_owned()),
            not_before: Set(not_before),
            expires_at: Set(expires_at),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map(drop)
    }

    /// The live entries after `since` (all live entries without one), oldest first, and the cursor to
    /// pass next time: the newest number there is.
    pub async fn since(
        &self,
        since: Option<i64>,
    ) -> Result<(Vec<revocation::Model>, i64), sea_orm::DbErr> {
        let newest: Option<i64> = revocation::Entity::find()
            .select_only()
            .column_as(revocation::Column::Seq.max(), "newest")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        let newest = newest.unwrap_or(0);
        // A cursor from the future (another database, a restore) is unknown: answer everything live.
        let since = since.filter(|&s| s <= newest).unwrap_or(0);
        let entries = revocation::Entity::find()
            .filter(revocation::Column::Seq.gt(since))
            .filter(revocation::Column::ExpiresAt.gt(Utc::now()))
            .order_by_asc(revocation::Column::Seq)
            .all(&self.db)
            .await?;
        Ok((entries, newest))
    }

    /// Deletes the entries whose tokens have all expired.
    pub async fn prune(&self) -> Result<u64, sea_orm::DbErr> {
        let res = revocation::Entity::delete_many()
            .filter(revocation::Column::ExpiresAt.lte(Utc::now()))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }
}
