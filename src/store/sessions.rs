//! Sessions and their refresh tokens. A session is one login: the family of refresh tokens it issues
//! and the `sid` of every access token issued in it.
//!
//! A token is spent when its successor exists. The successor's hash is derived from the token's, so
//! rotation is one `INSERT .. SELECT .. ON CONFLICT DO NOTHING`: of many concurrent uses exactly one
//! inserts, on SQLite and PostgreSQL alike, with no transaction or row lock to hold across round
//! trips. Rotations that arrive while such a statement runs are spent together by the next one (group
//! commit): one round trip, one commit and one WAL write for all of them, which is most of a
//! rotation's cost besides the signature.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, Func, OnConflict, Query, UnionType},
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Unique,
    deny_list::{Entry, Revocation},
    revocation_feed::append,
};
use crate::{
    entity::{refresh_token, session, user},
    value::scope::Scope,
};

#[derive(Clone)]
pub struct SessionStore {
    db: DatabaseConnection,
    /// Where rotations wait for the statement that spends them; its task starts with the first.
    spender: Arc<OnceLock<mpsc::Sender<Spend>>>,
}

/// At most this many rotations share one statement: each size is a statement of its own that every
/// connection keeps prepared.
const MAX_BATCH: usize = 16;

/// One rotation waiting for its statement.
struct Spend {
    presented: Vec<u8>,
    successor: Vec<u8>,
    client_id: String,
    now: DateTime<Utc>,
    /// The successor's idle expiry, before the session's own caps it.
    expires_at: DateTime<Utc>,
    answer: oneshot::Sender<Result<Option<Spent>, String>>,
}

/// What the statement says of a token it spent.
struct Spent {
    rotated: Rotated,
    last_used_at: DateTime<Utc>,
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
    /// A spent token was presented again: the session must be revoked (RFC 9700 §4.14.2).
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
        Self {
            db,
            spender: Arc::default(),
        }
    }

    /// Starts a session for `user` as the password check found them, that ends at the latest after
    /// `absolute_ttl`, with its first refresh token (given by its hash) when the client may refresh.
    /// Both rows or neither; `None` when the user was disabled or changed their password since.
    pub async fn start(
        &self,
        user: &user::Model,
        client_id: &str,
        scope: &Scope,
        absolute_ttl: Duration,
        refresh: Option<(Vec<u8>, Duration)>,
    ) -> Result<Option<session::Model>, sea_orm::DbErr> {
        use sea_orm::sea_query::ExprTrait;
        use session::Column as S;
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let session = session::Model {
            id: Uuid::new_v4(),
            user_id: user.id,
            client_id: client_id.to_owned(),
            scope: scope.to_string(),
            created_at: now,
            last_used_at: now,
            expires_at: later(now, absolute_ttl),
            revoked_at: None,
            revoked_reason: None,
        };
        // Inserted only from the user's row as it was verified. On PostgreSQL that row is share-locked,
        // so a password change or a disable either commits first (and this inserts nothing) or waits
        // for this session and then revokes it; SQLite has one writer at a time.
        let verified = Query::select()
            .exprs([
                Expr::value(session.id),
                Expr::value(session.user_id),
                Expr::value(session.client_id.clone()),
                Expr::value(session.scope.clone()),
                Expr::value(now),
                Expr::value(now),
                Expr::value(session.expires_at),
            ])
            .from(user::Entity)
            .and_where(Expr::col(user::Column::Id).eq(user.id))
            .and_where(Expr::col(user::Column::IsActive).eq(true))
            .and_where(Expr::col(user::Column::PasswordChangedAt).eq(user.password_changed_at))
            .lock_shared()
            .to_owned();
        let insert = Query::insert()
            .into_table(session::Entity)
            .columns([
                S::Id,
                S::UserId,
                S::ClientId,
                S::Scope,
                S::CreatedAt,
                S::LastUsedAt,
                S::ExpiresAt,
            ])
            .select_from(verified)
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
            .to_owned();
        if txn.execute(&insert).await?.rows_affected() != 1 {
            return Ok(None);
        }
        if let Some((hash, idle_ttl)) = refresh {
            // Without RETURNING, which SQLite would emulate with a second statement.
            refresh_token::Entity::insert(new_token(&session, hash, scope, now, idle_ttl))
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(Some(session))
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
        Err(RotateError::Reused {
            session: session.id,
        })
    }

    /// Spends the token by inserting its successor, in the next statement of [`spend_in_batches`].
    /// `None` when nothing was inserted, whatever the reason.
    async fn rotate_at_once(
        &self,
        presented: &[u8],
        successor: &Successor,
        client_id: &str,
        rules: RefreshRules,
        now: DateTime<Utc>,
    ) -> Result<Option<Rotated>, RotateError> {
        let spender = self.spender.get_or_init(|| {
            let (sender, waiting) = mpsc::channel(1024);
            tokio::spawn(spend_in_batches(self.db.clone(), waiting));
            sender
        });
        let stopped =
            || RotateError::Db(sea_orm::DbErr::Custom("the rotation task stopped".into()));
        let (answer, answered) = oneshot::channel();
        let spend = Spend {
            presented: presented.to_vec(),
            successor: successor.hash.clone(),
            client_id: client_id.to_owned(),
            now,
            expires_at: later(now, rules.idle_ttl),
            answer,
        };
        spender.send(spend).await.map_err(|_| stopped())?;
        let spent = answered
            .await
            .map_err(|_| stopped())?
            .map_err(|e| RotateError::Db(sea_orm::DbErr::Custom(e)))?;
        let Some(Spent {
            rotated,
            last_used_at,
        }) = spent
        else {
            return Ok(None);
        };
        self.touch(rotated.session_id, last_used_at, now).await;
        Ok(Some(rotated))
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

    /// Revokes one session and records it in the revocation log, at once; nothing is recorded when it was
    /// revoked already. `until` is when its last access token expires.
    pub async fn revoke(
        &self,
        id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, sea_orm::DbErr> {
        let txn = super::begin_write(&self.db).await?;
        let res = session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let recorded = if res.rows_affected == 1 {
            vec![Revocation {
                entry: Entry::Session(id.to_string()),
                expires_at: until,
            }]
        } else {
            Vec::new()
        };
        append(&txn, &recorded).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    /// Revokes every session of a user and every token issued to them before now, as one record.
    pub async fn revoke_all_of_user(
        &self,
        user_id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, sea_orm::DbErr> {
        let txn = super::begin_write(&self.db).await?;
        let recorded = revoke_all_in(&txn, user_id, reason, until).await?;
        txn.commit().await?;
        Ok(recorded)
    }
}

/// Inside `txn`: revokes every live session of a user, and records that and a `sub` entry voiding every
/// token issued to them before this second (one from this second is void by its session).
pub(crate) async fn revoke_all_in(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    reason: &str,
    until: DateTime<Utc>,
) -> Result<Vec<Revocation>, sea_orm::DbErr> {
    let now = Utc::now();
    let ids: Vec<Uuid> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .into_tuple()
        .all(txn)
        .await?;
    if !ids.is_empty() {
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.is_in(ids.clone()))
            .exec(txn)
            .await?;
    }
    let recorded =
        Revocation::subject_and_sessions(user_id.to_string(), now.timestamp(), ids, until);
    append(txn, &recorded).await?;
    Ok(recorded)
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

/// Spends whatever rotations are waiting, up to [`MAX_BATCH`], in one statement, and again until every
/// [`SessionStore`] is gone.
async fn spend_in_batches(db: DatabaseConnection, mut waiting: mpsc::Receiver<Spend>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A token presented twice at once is spent by its first presentation. The others are answered
        // after the statement, so that the path they take next finds the successor and calls it a
        // retry or reuse.
        let mut seen = HashSet::new();
        let (first, again): (Vec<Spend>, Vec<Spend>) = batch
            .drain(..)
            .partition(|s| seen.insert(s.presented.clone()));
        match spend_all(&db, &first).await {
            Ok(mut spent) => {
                for s in first {
                    let _ = s.answer.send(Ok(spent.remove(&s.successor)));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for s in first {
                    let _ = s.answer.send(Err(e.clone()));
                }
            }
        }
        for s in again {
            let _ = s.answer.send(Ok(None));
        }
    }
}

/// The statement that spends tokens, keyed by the successor's hash. Inserting the successor is the
/// spend: its hash is derived from the token's, so of any number of concurrent rotations exactly one
/// inserts it. It is inserted from the presented token's row only when the token, its session and its
/// user are all live, with the token's scope, and `RETURNING` brings back what the access token says.
async fn spend_all(
    db: &DatabaseConnection,
    batch: &[Spend],
) -> Result<HashMap<Vec<u8>, Spent>, sea_orm::DbErr> {
    use refresh_token::Column as T;
    use sea_orm::sea_query::ExprTrait;
    use session::Column as S;
    let (tokens, sessions, users) = (refresh_token::Entity, session::Entity, user::Entity);
    // One SELECT per token, joined by UNION ALL: each finds its token by equality on the unique hash,
    // so the planner always starts there. (A join to a VALUES list of the tokens let PostgreSQL, with
    // statistics from when the tables were small, start from a scan of every session instead.)
    let live = |s: &Spend| {
        Query::select()
            .expr(Expr::value(Uuid::new_v4()))
            .column((tokens, T::SessionId))
            .expr(Expr::value(s.successor.clone()))
            .column((tokens, T::Scope))
            .expr(Expr::value(s.now))
            // A token never outlives its session.
            .expr(Func::least([
                Expr::value(s.expires_at),
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
            .and_where(Expr::col((tokens, T::TokenHash)).eq(s.presented.clone()))
            .and_where(Expr::col((tokens, T::ExpiresAt)).gt(s.now))
            .and_where(Expr::col((sessions, S::ClientId)).eq(s.client_id.as_str()))
            .and_where(Expr::col((sessions, S::RevokedAt)).is_null())
            .and_where(Expr::col((sessions, S::ExpiresAt)).gt(s.now))
            .and_where(Expr::col((users, user::Column::IsActive)).eq(true))
            .and_where(
                Expr::col((users, user::Column::PasswordChangedAt))
                    .lte(Expr::col((sessions, S::CreatedAt))),
            )
            .to_owned()
    };
    let mut each = batch.iter().map(live);
    let Some(mut select) = each.next() else {
        return Ok(HashMap::new());
    };
    select.unions(each.map(|s| (UnionType::All, s)));
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
        .select_from(select)
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
        .on_conflict(OnConflict::column(T::TokenHash).do_nothing().to_owned())
        .returning(Query::returning().exprs([
            Expr::col(T::TokenHash),
            Expr::col(T::SessionId),
            Expr::col(T::Scope),
            of_session(Expr::col((sessions, S::UserId)), false),
            of_session(Expr::col((users, user::Column::Username)), true),
            of_session(Expr::col((sessions, S::LastUsedAt)), false),
        ]))
        .to_owned();
    let mut spent = HashMap::with_capacity(batch.len());
    for row in db.query_all(&insert).await? {
        let scope: String = row.try_get_by_index(2)?;
        spent.insert(
            row.try_get_by_index(0)?,
            Spent {
                rotated: Rotated {
                    session_id: row.try_get_by_index(1)?,
                    user_id: row.try_get_by_index(3)?,
                    username: row.try_get_by_index(4)?,
                    scope: Scope::parse(&scope).unwrap_or_default(),
                    replayed: false,
                },
                last_used_at: row.try_get_by_index(5)?,
            },
        );
    }
    Ok(spent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::{
            clients::ClientStore,
            users::{NewUser, UserStore},
        },
        value::{scope::Scope, username::Username},
    };

    const TTL: Duration = Duration::from_secs(3600);

    /// A SQLite file with one user, the default client, and `n` sessions whose first tokens hash to
    /// `[i; 32]`.
    async fn sessions(n: u8) -> (tempfile::TempDir, DatabaseConnection, Vec<Uuid>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = crate::store::connect(&url, 4).await.unwrap();
        crate::store::migrate(&db).await.unwrap();
        let scope = Scope::parse("profile").unwrap();
        ClientStore::new(db.clone())
            .ensure_default("c", &scope)
            .await
            .unwrap();
        let user = UserStore::new(db.clone())
            .create(NewUser {
                username: &Username::parse("alice").unwrap(),
                email: None,
                password_hash: "not a hash".into(),
                is_admin: false,
            })
            .await
            .unwrap();
        let store = SessionStore::new(db.clone());
        let mut ids = Vec::new();
        for i in 0..n {
            let s = store
                .start(&user, "c", &scope, TTL, Some((vec![i; 32], TTL)))
                .await
                .unwrap()
                .unwrap();
            ids.push(s.id);
        }
        (dir, db, ids)
    }

    fn spend(
        presented: u8,
        successor: u8,
        client_id: &str,
    ) -> (Spend, oneshot::Receiver<Result<Option<Spent>, String>>) {
        let (answer, answered) = oneshot::channel();
        let now = Utc::now();
        let spend = Spend {
            presented: vec![presented; 32],
            successor: vec![successor; 32],
            client_id: client_id.to_owned(),
            now,
            expires_at: later(now, TTL),
            answer,
        };
        (spend, answered)
    }

    #[tokio::test]
    async fn one_statement_spends_many_tokens_and_says_which_session_each_was_in() {
        let (_dir, db, ids) = sessions(3).await;
        let batch: Vec<Spend> = [
            (0, 100, "c"),
            (1, 101, "c"),
            (2, 102, "other"),
            (9, 109, "c"),
        ]
        .into_iter()
        .map(|(p, s, c)| spend(p, s, c).0)
        .collect();

        let spent = spend_all(&db, &batch).await.unwrap();

        // The two live tokens of this client are spent, each in its own session; another client's token
        // and one that does not exist are not.
        assert_eq!(spent.len(), 2);
        assert_eq!(spent[&vec![100; 32]].rotated.session_id, ids[0]);
        assert_eq!(spent[&vec![101; 32]].rotated.session_id, ids[1]);
        assert_eq!(spent[&vec![101; 32]].rotated.username, "alice");
        let store = SessionStore::new(db.clone());
        assert!(store.token(&[102; 32]).await.unwrap().is_none());
        // Spent means the successor exists: the same statement again inserts nothing.
        assert!(spend_all(&db, &batch[..2]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_token_presented_twice_at_once_is_spent_once_and_the_other_is_answered_after() {
        let (_dir, db, _) = sessions(2).await;
        let (sender, waiting) = mpsc::channel(8);
        let mut answers = Vec::new();
        // All three wait before the task starts, so they share one statement.
        for (p, s) in [(0, 100), (0, 100), (1, 101)] {
            let (spend, answered) = spend(p, s, "c");
            sender.send(spend).await.unwrap();
            answers.push(answered);
        }
        drop(sender);

        tokio::spawn(spend_in_batches(db.clone(), waiting));

        // The second presentation learns nothing was spent for it only once its successor exists, so the
        // path it takes next sees a retry or reuse rather than an unknown token.
        let [first, twice, other] = <[_; 3]>::try_from(answers).ok().unwrap();
        assert!(twice.await.unwrap().unwrap().is_none());
        let store = SessionStore::new(db.clone());
        assert!(store.token(&[100; 32]).await.unwrap().is_some());
        assert!(first.await.unwrap().unwrap().is_some());
        assert!(other.await.unwrap().unwrap().is_some());
    }
}
