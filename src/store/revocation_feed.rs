//! The revocation log: every revocation, numbered; the number is the feed's cursor. It is the truth the
//! deny list is rebuilt from, so a revocation is appended in the same transaction as the change that
//! caused it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set, Statement,
};

use super::{Db, Unique};
use crate::{
    entity::revocation,
    error::Error,
    ports,
    value::{
        claims::AccessClaims,
        revocation::{Entry, Revocation},
    },
};

/// The PostgreSQL advisory lock appending writers take in turn (an arbitrary constant of this table).
const APPEND_LOCK: i64 = 0x7265_766f_6b65;

#[derive(Clone)]
pub struct RevocationFeed {
    db: Db,
}

impl RevocationFeed {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Deletes up to `batch` entries whose tokens have all expired; returns how many went.
    pub async fn purge(&self, now: DateTime<Utc>, batch: u64) -> Result<u64, DbErr> {
        let doomed = revocation::Entity::find()
            .select_only()
            .column(revocation::Column::Seq)
            .filter(revocation::Column::ExpiresAt.lte(now))
            .limit(batch)
            .into_query();
        let res = revocation::Entity::delete_many()
            .filter(revocation::Column::Seq.in_subquery(doomed))
            .exec(self.db.writer())
            .await?;
        Ok(res.rows_affected)
    }
}

#[async_trait]
impl ports::RevocationLog for RevocationFeed {
    /// Appends, in a transaction of their own, the revocations the log does not hold yet: revoking one
    /// token again (anyone holding it may, at request rate) must not grow the log and the feed by an
    /// entry each time. Checked under the append lock, so concurrent repeats append it once.
    async fn record(&self, revocations: &[Revocation]) -> Result<(), Error> {
        use revocation::Column as R;
        let txn = super::begin_write(&self.db).await?;
        lock(&txn).await?;
        let mut new = Vec::with_capacity(revocations.len());
        for r in revocations {
            let (kind, value, not_before) = r.entry.parts();
            let held = revocation::Entity::find()
                .select_only()
                .column(R::Seq)
                .filter(R::Kind.eq(kind))
                .filter(R::Value.eq(value))
                .filter(match not_before {
                    Some(t) => R::NotBefore.eq(t),
                    None => R::NotBefore.is_null(),
                })
                .filter(R::ExpiresAt.gte(r.expires_at))
                .limit(1)
                .into_tuple::<i64>()
                .one(&txn)
                .await?;
            if held.is_none() {
                new.push(r.clone());
            }
        }
        append(&txn, &new).await?;
        Ok(txn.commit().await?)
    }

    /// The live entries numbered after `since` (all live entries without one), oldest first, and the
    /// cursor to pass next time.
    async fn since(
        &self,
        since: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Revocation>, i64), Error> {
        let newest: Option<i64> = revocation::Entity::find()
            .select_only()
            .column_as(revocation::Column::Seq.max(), "newest")
            .into_tuple::<Option<i64>>()
            .unique(self.db.reader())
            .await?
            .flatten();
        let newest = newest.unwrap_or(0);
        // A cursor from the future (another database, a restore) is unknown: answer everything live.
        let since = since.filter(|&s| (0..=newest).contains(&s)).unwrap_or(0);
        let rows = revocation::Entity::find()
            .filter(revocation::Column::Seq.gt(since))
            .filter(revocation::Column::ExpiresAt.gt(now))
            .order_by_asc(revocation::Column::Seq)
            .all(self.db.reader())
            .await?;
        // Rows committed between the two reads are answered now, and the cursor moves past them.
        let cursor = rows.last().map_or(newest, |r| r.seq.max(newest));
        let entries = rows
            .into_iter()
            .filter_map(|r| {
                Some(Revocation {
                    entry: Entry::from_parts(&r.kind, r.value, r.not_before)?,
                    expires_at: r.expires_at,
                })
            })
            .collect();
        Ok((entries, cursor))
    }

    /// Whether a live entry of the log revokes the token: its `jti`, its session, or its subject from
    /// before it was issued. The deny list answers this from a copy; this asks the truth.
    async fn denies(&self, claims: &AccessClaims) -> Result<bool, Error> {
        use revocation::Column as R;
        use sea_orm::sea_query::ExprTrait;
        let mut which = Condition::any()
            .add(R::Kind.eq("jti").and(R::Value.eq(claims.jti.as_str())))
            .add(
                R::Kind
                    .eq("sub")
                    .and(R::Value.eq(claims.sub.as_str()))
                    .and(R::NotBefore.gt(claims.iat)),
            );
        if let Some(sid) = &claims.sid {
            which = which.add(R::Kind.eq("sid").and(R::Value.eq(sid.as_str())));
        }
        let found = revocation::Entity::find()
            .select_only()
            .column(R::Seq)
            .filter(which)
            .filter(R::ExpiresAt.gt(Utc::now()))
            .limit(1)
            .into_tuple::<i64>()
            .all(self.db.reader())
            .await?;
        Ok(!found.is_empty())
    }
}

/// Takes the append lock until `txn` ends (PostgreSQL; SQLite's one writer is the lock). Taken again by
/// the same transaction, it is held already.
async fn lock(txn: &impl ConnectionTrait) -> Result<(), DbErr> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [APPEND_LOCK.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Appends revocations inside `txn`. Numbers must become visible in order, or a reader who saw number
/// n could later find a lower one committed and a cursor would skip it: PostgreSQL hands out sequence
/// numbers before commit, so its writers take turns under a lock held until commit; SQLite has one
/// writer at a time already.
pub async fn append(txn: &impl ConnectionTrait, revocations: &[Revocation]) -> Result<(), DbErr> {
    if revocations.is_empty() {
        return Ok(());
    }
    lock(txn).await?;
    let now = Utc::now();
    // In statements of bounded size: PostgreSQL takes at most 65,535 parameters, five a row.
    for chunk in revocations.chunks(1000) {
        let rows = chunk.iter().map(|r| {
            let (kind, value, not_before) = r.entry.parts();
            revocation::ActiveModel {
                kind: Set(kind.to_owned()),
                value: Set(value.to_owned()),
                not_before: Set(not_before),
                expires_at: Set(r.expires_at),
                created_at: Set(now),
                ..Default::default()
            }
        });
        revocation::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}
