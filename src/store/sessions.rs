//! Sessions and their refresh tokens. A session is one login: the family of refresh tokens it issues
//! and the `sid` of every access token issued in it.
//!
//! A token is spent when its successor exists. The successor's hash is derived from the token's, so
//! rotation is one `INSERT .. SELECT .. ON CONFLICT DO NOTHING`: of many concurrent uses exactly one
//! inserts, on SQLite and PostgreSQL alike, with no transaction or row lock to hold across round
//! trips.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, Func, OnConflict, Query},
};
use uuid::Uuid;

use super::Unique;
use crate::{
    entity::{refresh_token, session, user},
    oauth::scope::Scope,
};

#[derive(Clone)]
pub struct SessionStore {
    db: DatabaseConnection,
}

/// The lifetimes rotation enforces.
#[derive(Clone, Copy)]
pub struct RefreshRules {
    pub idle_ttl: Duration,
    pub reuse_grace: Duration,
}

/// The token that replaces the presented one, by hash: its own, and that of its successor in turn,
/// whose existence means it has been rotated too.
pub struct Successor {
    pub hash: Vec<u8>,
    pub next_hash: Vec<u8>,
}

/// A successful rotation: what the access token issued with the successor says.
pub struct Rotated {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub scope: Scope,
    /// `true` when this answers a retry within the grace window with the successor issued before.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no such refresh token")]
    NotFound,
    #[error("the refresh token belongs to another client")]
    WrongClient,
    #[error("the refresh token is past its idle lifetime")]
    Expired,
    #[error("the session is revoked or past its absolute lifetime")]
    SessionEnded,
    #[error("the user is gone, disabled, or changed their password since the session began")]
    UserInvalid,
    #[error("the requested scope is wider than the token's")]
    InvalidScope,
    /// A spent token was presented again: the session was revoked (RFC 9700 §4.14.2).
    #[error("a spent refresh token was presented again")]
    Reused { session: Uuid },
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

/// How stale a session's `last_used_at` may be. It is kept to the minute: a session refreshed more
/// often than that would otherwise cost one more write per rotation for a figure no one reads to the
/// second.
const LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

fn later(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

impl SessionStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Starts a session that ends at the latest after `absolute_ttl`, with its first refresh token
    /// (given by its hash) when the client may refresh. Both rows or neither.
    pub async fn start(
        &self,
        user_id: Uuid,
        client_id: &str,
        scope: &Scope,
        absolute_ttl: Duration,
        refresh: Option<(Vec<u8>, Duration)>,
    ) -> Result<session::Model, sea_orm::DbErr> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let session = session::Model {
            id: Uuid::new_v4(),
            user_id,
            client_id: client_id.to_owned(),
            scope: scope.to_string(),
            created_at: now,
            last_used_at: now,
            expires_at: later(now, absolute_ttl),
            revoked_at: None,
            revoked_reason: None,
        };
        session::Entity::insert(session::ActiveModel::from(session.clone()))
            .exec_without_returning(&txn)
            .await?;
        if let Some((hash, idle_ttl)) = refresh {
            // Without RETURNING, which SQLite would emulate with a second statement.
            refresh_token::Entity::insert(new_token(&session, hash, scope, now, idle_ttl))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(session)
    }

    /// Spends the token whose hash is `presented` by issuing its successor in the same session. See
    /// [`RotateError`] for every refusal; only reuse writes anything.
    pub async fn rotate(
        &self,
        presented: &[u8],
        successor: &Successor,
        client_id: &str,
        requested: Option<&Scope>,
        rules: RefreshRules,
    ) -> Result<Rotated, RotateError> {
        let now = Utc::now();
        // Most rotations present a live token and ask for no narrower scope: one statement checks
        // and spends those. Anything else, and anything it did not insert, takes the path below,
        // which finds out why.
        if requested.is_none()
            && let Some(rotated) = self
                .rotate_at_once(presented, successor, client_id, rules, now)
                .await?
        {
            return Ok(rotated);
        }
        // The token, its session and its user in one read.
        let Some((token, Some(session), user)) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(presented.to_vec()))
            .find_also_related(session::Entity)
            .and_also_related(user::Entity)
            .all(&self.db)
            .await?
            .pop()
        else {
            return Err(RotateError::NotFound);
        };
        if session.client_id != client_id {
            return Err(RotateError::WrongClient);
        }
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(RotateError::SessionEnded);
        }
        let user = match user {
            Some(u) if u.is_active && u.password_changed_at <= session.created_at => u,
            _ => return Err(RotateError::UserInvalid),
        };
        // The successor keeps the token's scope; a narrower request narrows this access token only
        // (RFC 6749 §6).
        let token_scope = Scope::parse(&token.scope).unwrap_or_default();
        let scope = match requested {
            Some(r) if !r.is_subset(&token_scope) => Err(RotateError::InvalidScope),
            Some(r) => Ok(r.clone()),
            None => Ok(token_scope.clone()),
        };

        // A narrower request could not be tried before the token's scope was known: it is spent by the
        // same statement now, and only its access token is narrowed.
        if requested.is_some()
            && token.expires_at > now
            && let Ok(scope) = &scope
            && let Some(rotated) = self
                .rotate_at_once(presented, successor, client_id, rules, now)
                .await?
        {
            return Ok(Rotated {
                scope: scope.clone(),
                ..rotated
            });
        }

        // Expired, too wide a scope, or spent already; spent is the one that matters, so it is
        // looked up on these rare paths rather than on every rotation.
        let Some(next) = self.token(&successor.hash).await? else {
            return Err(if token.expires_at <= now {
                RotateError::Expired
            } else {
                scope.err().unwrap_or(RotateError::NotFound)
            });
        };
        // Spent when `next` was created. Within the grace window, a retry gets that same successor
        // while it is live (unexpired, not spent itself), so the session never forks; anything else
        // is reuse.
        let within_grace =
            !rules.reuse_grace.is_zero() && now <= later(next.created_at, rules.reuse_grace);
        if within_grace
            && next.session_id == session.id
            && next.expires_at > now
            && self.token(&successor.next_hash).await?.is_none()
        {
            return Ok(Rotated {
                session_id: session.id,
                user_id: user.id,
                username: user.username,
                scope: scope?,
                replayed: true,
            });
        }
        self.revoke(session.id, "refresh_token_reuse").await?;
        Err(RotateError::Reused {
            session: session.id,
        })
    }

    /// The statement that spends a token. Inserting the successor is the spend: its hash is derived
    /// from the token's, so of any number of concurrent rotations exactly one inserts it. It is
    /// inserted from the presented token's row only when the token, its session and its user are all
    /// live, with the token's scope, and `RETURNING` brings back what the access token says. `None`
    /// when nothing was inserted, whatever the reason.
    async fn rotate_at_once(
        &self,
        presented: &[u8],
        successor: &Successor,
        client_id: &str,
        rules: RefreshRules,
        now: DateTime<Utc>,
    ) -> Result<Option<Rotated>, RotateError> {
        use refresh_token::Column as T;
        use sea_orm::sea_query::ExprTrait;
        use session::Column as S;
        let (tokens, sessions, users) = (refresh_token::Entity, session::Entity, user::Entity);
        let live = Query::select()
            .expr(Expr::value(Uuid::new_v4()))
            .column((tokens, T::SessionId))
            .expr(Expr::value(successor.hash.clone()))
            .column((tokens, T::Scope))
            .expr(Expr::value(now))
            // A token never outlives its session.
            .expr(Func::least([
                Expr::value(later(now, rules.idle_ttl)),
                Expr::col((sessions, S::ExpiresAt)),
            ]))
            .from(tokens)
            .inner_join(
                sessions,
                Expr::col((sessions, S::Id)).equals((tokens, T::SessionId)),
            )
            .inner_join(
                users,
                Expr::col((users, user::Column::Id)).equals((sessions, S::UserId)),
            )
            .and_where(Expr::col((tokens, T::TokenHash)).eq(presented.to_vec()))
            .and_where(Expr::col((tokens, T::ExpiresAt)).gt(now))
            .and_where(Expr::col((sessions, S::ClientId)).eq(client_id))
            .and_where(Expr::col((sessions, S::RevokedAt)).is_null())
            .and_where(Expr::col((sessions, S::ExpiresAt)).gt(now))
            .and_where(Expr::col((users, user::Column::IsActive)).eq(true))
            .and_where(
                Expr::col((users, user::Column::PasswordChangedAt))
                    .lte(Expr::col((sessions, S::CreatedAt))),
            )
            .to_owned();
        // What the returned row's session says, looked up beside the insert.
        let of_session = |column: Expr, from_users: bool| {
            let mut q = Query::select();
            q.expr(column)
                .from(sessions)
                .and_where(Expr::col((sessions, S::Id)).equals((tokens, T::SessionId)));
            if from_users {
                q.inner_join(
                    users,
                    Expr::col((users, user::Column::Id)).equals((sessions, S::UserId)),
                );
            }
            Expr::SubQuery(None, Box::new(q.into()))
        };
        let insert = Query::insert()
            .into_table(tokens)
            .columns([
                T::Id,
                T::SessionId,
                T::TokenHash,
                T::Scope,
                T::CreatedAt,
                T::ExpiresAt,
            ])
            .select_from(live)
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
            .on_conflict(OnConflict::column(T::TokenHash).do_nothing().to_owned())
            .returning(Query::returning().exprs([
                Expr::col(T::SessionId),
                Expr::col(T::Scope),
                of_session(Expr::col((sessions, S::UserId)), false),
                of_session(Expr::col((users, user::Column::Username)), true),
                of_session(Expr::col((sessions, S::LastUsedAt)), false),
            ]))
            .to_owned();
        let Some(row) = self.db.query_all(&insert).await?.pop() else {
            return Ok(None);
        };
        let session_id: Uuid = row.try_get_by_index(0)?;
        let scope: String = row.try_get_by_index(1)?;
        let last_used_at: DateTime<Utc> = row.try_get_by_index(4)?;
        self.touch(session_id, last_used_at, now).await;
        Ok(Some(Rotated {
            session_id,
            user_id: row.try_get_by_index(2)?,
            username: row.try_get_by_index(3)?,
            scope: Scope::parse(&scope).unwrap_or_default(),
            replayed: false,
        }))
    }

    /// Records a rotation as the session's last use, to the minute. The rotation has happened by then:
    /// failing it for this figure would lose the successor the client is about to receive, and its
    /// retry would count as reuse.
    async fn touch(&self, id: Uuid, last_used_at: DateTime<Utc>, now: DateTime<Utc>) {
        if now - last_used_at < LAST_USED_GRANULARITY {
            return;
        }
        if let Err(e) = session::Entity::update_many()
            .col_expr(session::Column::LastUsedAt, Expr::value(now))
            .filter(session::Column::Id.eq(id))
            .exec(&self.db)
            .await
        {
            tracing::warn!(sid = %id, error = %e, "could not record a session's last use");
        }
    }

    async fn token(&self, hash: &[u8]) -> Result<Option<refresh_token::Model>, sea_orm::DbErr> {
        refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash.to_vec()))
            .unique(&self.db)
            .await
    }

    /// The session a refresh token belongs to, spent or not.
    pub async fn find_by_refresh(
        &self,
        hash: &[u8],
    ) -> Result<Option<session::Model>, sea_orm::DbErr> {
        let Some(token) = self.token(hash).await? else {
            return Ok(None);
        };
        session::Entity::find_by_id(token.session_id)
            .unique(&self.db)
            .await
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<session::Model>, sea_orm::DbErr> {
        session::Entity::find_by_id(id).unique(&self.db).await
    }

    /// The user's sessions that are neither revoked nor past their absolute lifetime, newest first.
    pub async fn list_live(&self, user_id: Uuid) -> Result<Vec<session::Model>, sea_orm::DbErr> {
        session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(Utc::now()))
            .order_by_desc(session::Column::CreatedAt)
            .all(&self.db)
            .await
    }

    /// Revokes one session; `false` when it was already revoked.
    pub async fn revoke(&self, id: Uuid, reason: &str) -> Result<bool, sea_orm::DbErr> {
        let res = session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Revokes every session of a user that is not revoked yet; returns their ids.
    pub async fn revoke_all_of_user(
        &self,
        user_id: Uuid,
        reason: &str,
    ) -> Result<Vec<Uuid>, sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        let ids: Vec<Uuid> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .into_tuple()
            .all(&txn)
            .await?;
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(ids)
    }
}

fn new_token(
    session: &session::Model,
    hash: Vec<u8>,
    scope: &Scope,
    now: DateTime<Utc>,
    idle_ttl: Duration,
) -> refresh_token::ActiveModel {
    refresh_token::ActiveModel {
        id: Set(Uuid::new_v4()),
        session_id: Set(session.id),
        token_hash: Set(hash),
        scope: Set(scope.to_string()),
        created_at: Set(now),
        // A token never outlives its session.
        expires_at: Set(later(now, idle_ttl).min(session.expires_at)),
    }
}
