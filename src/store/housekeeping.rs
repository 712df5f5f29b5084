//! Housekeeping: deletes the rows that can no longer matter, in batches short enough not to stall
//! requests, so that nothing grows without bound. Several instances may run it at once: a row two of
//! them pick is deleted by one, and the other counts nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
    sea_query::{Alias, Expr, ExprTrait, Query},
};
use uuid::Uuid;

use super::{Db, revocation_feed::RevocationFeed, sessions::unexpired_token};
use crate::entity::{authorization_code, refresh_token, session, sign_in_session};

/// Rows per statement.
pub const BATCH: u64 = 1000;

/// What one pass removed, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub revocations: u64,
    pub authorization_codes: u64,
    pub sign_in_sessions: u64,
    pub account_tokens: u64,
    pub account_mail: u64,
}

impl Purged {
    /// Each table's name and count, in the order `portcullis purge` prints them.
    pub fn tables(&self) -> [(&'static str, u64); 7] {
        [
            ("sessions", self.sessions),
            ("refresh_tokens", self.refresh_tokens),
            ("revocations", self.revocations),
            ("authorization_codes", self.authorization_codes),
            ("sign_in_sessions", self.sign_in_sessions),
            ("account_tokens", self.account_tokens),
            ("account_mail", self.account_mail),
        ]
    }
}

/// One pass at `now`. `access_ttl` is how long an access token of an ended session may still live, and
/// so how long the session must stay to be named by the deny list's `sid` entries.
pub async fn purge(db: &Db, now: DateTime<Utc>, access_ttl: Duration) -> Result<Purged, DbErr> {
    let feed = RevocationFeed::new(db.clone());
    let db = db.writer();
    let cutoff = now - chrono::Duration::from_std(access_ttl).unwrap_or(chrono::Duration::MAX);
    let mut purged = Purged::default();
    loop {
        let (sessions, tokens) = ended_sessions(db, cutoff).await?;
        purged.sessions += sessions;
        purged.refresh_tokens += tokens;
        if sessions < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut from = None;
    loop {
        let (tokens, reached) = spent_tokens(db, now, from).await?;
        purged.refresh_tokens += tokens;
        if tokens < BATCH {
            break;
        }
        from = reached;
        tokio::task::yield_now().await;
    }
    loop {
        let entries = feed.purge(now, BATCH).await?;
        purged.revocations += entries;
        if entries < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    // A code, a sign-in session or a mailed link past its lifetime can do nothing more, and a message
    // older than an hour no longer counts against its account's budget.
    use crate::entity::{account_mail, account_token};
    purged.authorization_codes = delete_before::<authorization_code::Entity>(
        db,
        authorization_code::Column::CodeHash,
        authorization_code::Column::ExpiresAt,
        now,
    )
    .await?;
    purged.sign_in_sessions = delete_before::<sign_in_session::Entity>(
        db,
        sign_in_session::Column::Id,
        sign_in_session::Column::ExpiresAt,
        now,
    )
    .await?;
    purged.account_tokens = delete_before::<account_token::Entity>(
        db,
        account_token::Column::TokenHash,
        account_token::Column::ExpiresAt,
        now,
    )
    .await?;
    purged.account_mail = delete_before::<account_mail::Entity>(
        db,
        account_mail::Column::Id,
        account_mail::Column::SentAt,
        now - chrono::Duration::hours(1),
    )
    .await?;
    Ok(purged)
}

/// Deletes, a batch at a time, the rows of `E` (by its key `key`) whose `until` is at or before `before`.
async fn delete_before<E: EntityTrait>(
    db: &DatabaseConnection,
    key: E::Column,
    until: E::Column,
    before: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut deleted = 0;
    loop {
        let doomed = E::find()
            .select_only()
            .column(key)
            .filter(until.lte(before))
            .limit(BATCH)
            .into_query();
        let batch = E::delete_many()
            .filter(key.in_subquery(doomed))
            .exec(db)
            .await?
            .rows_affected;
        deleted += batch;
        if batch < BATCH {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes up to a batch of sessions that ended before `cutoff`, with their refresh tokens. A session
/// ends when it is revoked, reaches its absolute lifetime, or goes idle: no token of it is unexpired
/// (a session without refresh tokens is idle from the start). Returns (sessions, tokens) deleted.
async fn ended_sessions(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
) -> Result<(u64, u64), DbErr> {
    use refresh_token::Column as T;
    use session::Column as S;
    let ids: Vec<Uuid> = session::Entity::find()
        .select_only()
        .column(S::Id)
        .filter(
            S::RevokedAt
                .lte(cutoff)
                .or(S::ExpiresAt.lte(cutoff))
                .or(S::CreatedAt
                    .lte(cutoff)
                    .and(Expr::exists(unexpired_token(cutoff)).not())),
        )
        .limit(BATCH)
        .into_tuple()
        .all(db)
        .await?;
    if ids.is_empty() {
        return Ok((0, 0));
    }
    // The tokens first, so that each table's count is its own.
    let tokens = refresh_token::Entity::delete_many()
        .filter(T::SessionId.is_in(ids.clone()))
        .exec(db)
        .await?
        .rows_affected;
    let sessions = session::Entity::delete_many()
        .filter(S::Id.is_in(ids))
        .exec(db)
        .await?
        .rows_affected;
    Ok((sessions, tokens))
}

/// Deletes up to a batch of spent refresh tokens past their idle lifetime, oldest expiry first from
/// `from` on, and returns how many went and the expiry reached, where the next batch starts: no
/// deletion makes another token deletable, and a batch that started again from the oldest re-read
/// every token already kept or deleted (dead until a vacuum), so a pass grew with the square of its
/// size. A token is spent when a later one of its session exists; and since that later one is what
/// marks an earlier token spent, a token goes only once no earlier token of its session is unexpired,
/// so a deletion never makes a token that could still be valid look unspent.
async fn spent_tokens(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
) -> Result<(u64, Option<DateTime<Utc>>), DbErr> {
    use refresh_token::Column as T;
    let other = Alias::new("o");
    let in_session = || {
        Query::select()
            .expr(Expr::val(1))
            .from_as(refresh_token::Entity, other.clone())
            .and_where(
                Expr::col((other.clone(), T::SessionId))
                    .equals((refresh_token::Entity, T::SessionId)),
            )
            .to_owned()
    };
    let successor = in_session()
        .and_where(
            Expr::col((other.clone(), T::CreatedAt))
                .gt(Expr::col((refresh_token::Entity, T::CreatedAt))),
        )
        .to_owned();
    let live_predecessor = in_session()
        .and_where(
            Expr::col((other.clone(), T::CreatedAt))
                .lt(Expr::col((refresh_token::Entity, T::CreatedAt))),
        )
        .and_where(Expr::col((other.clone(), T::ExpiresAt)).gt(now))
        .to_owned();
    // Inclusive, for the tokens that share the last expiry of the batch before.
    let doomed: Vec<(Uuid, DateTime<Utc>)> = refresh_token::Entity::find()
        .select_only()
        .column(T::Id)
        .column(T::ExpiresAt)
        .filter(T::ExpiresAt.lte(now))
        .apply_if(from, |q, from| q.filter(T::ExpiresAt.gte(from)))
        .filter(Expr::exists(successor))
        .filter(Expr::exists(live_predecessor).not())
        .order_by_asc(T::ExpiresAt)
        .limit(BATCH)
        .into_tuple()
        .all(db)
        .await?;
    let Some(&(_, reached)) = doomed.last() else {
        return Ok((0, from));
    };
    let deleted = refresh_token::Entity::delete_many()
        .filter(T::Id.is_in(doomed.into_iter().map(|(id, _)| id)))
        .exec(db)
        .await?
        .rows_affected;
    Ok((deleted, Some(reached)))
}
