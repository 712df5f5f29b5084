//! Sessions and their refresh tokens, as [`ports::Sessions`]: the facts of a rotation (spent, by whom,
//! when); what they mean (reuse, a retry within the grace window) is the refresh grant's to decide.
//!
//! A session starts with its first refresh token and, in the code flow, the claim of its code, all or
//! nothing: in one statement on PostgreSQL; on SQLite in one transaction with the other starts waiting
//! for its one writer (group commit, as rotations are spent below).
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
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    Iterable, QueryFilter, QueryOrder, QueryResult, QuerySelect, Statement,
    sea_query::{
        Alias, Asterisk, CommonTableExpression, DynIden, Expr, ExprTrait, Func, InsertStatement,
        IntoCondition, IntoIden, IntoTableRef, LockType, OnConflict, Query, SelectStatement,
        SqliteQueryBuilder, UnionType, UpdateStatement, Values, WithClause,
    },
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Db, Unique,
    revocation_feed::append,
    sign_in::{self, grant_of},
};
use crate::{
    entity::{authorization_code, client, refresh_token, session, sign_in_session, user},
    error::Error,
    ports::{
        self, CodeGrant, CodeStart, CodeStarted, NewSession, RefreshToken, Spent, SuccessorToken,
    },
    value::{
        account::{Session, User},
        revocation::{Entry, Revocation},
        scope::Scope,
    },
};

#[derive(Clone)]
pub struct SessionStore {
    db: Db,
    /// Where rotations wait for the statement that spends them; its task starts with the first.
    spender: Arc<OnceLock<mpsc::Sender<Waiting>>>,
    /// On SQLite, where session starts wait for the transaction that starts them; its task starts with
    /// the first.
    starter: Arc<OnceLock<mpsc::Sender<(Starting, Answer)>>>,
}

/// At most this many rotations share one statement (each size is a statement of its own that every
/// connection keeps prepared), and this many session starts one transaction.
const MAX_BATCH: usize = 16;

/// A session to start, owned, as the statement or transaction that starts it needs it.
struct Starting {
    /// For a code, its user and scope are the code's, filled in when it is claimed.
    session: Session,
    refresh: Option<(Vec<u8>, DateTime<Utc>)>,
    from: Source,
}

/// What a session starts from.
enum Source {
    /// A user as a password check saw them: the session starts only while the password is theirs.
    User {
        password_changed_at: DateTime<Utc>,
    },
    Code(PresentedCode),
}

/// A code, as the token request presents it.
struct PresentedCode {
    hash: Vec<u8>,
    redirect_uri: Option<String>,
    code_challenge: String,
}

/// A start that started: its session, and when it redeemed a code, what the code stood for and its
/// user.
struct Begun {
    session: Session,
    code: Option<(CodeGrant, User)>,
}

/// Where a start waiting on SQLite hears whether it started.
type Answer = oneshot::Sender<Result<Option<Begun>, String>>;

impl Starting {
    fn new(new: NewSession<'_>) -> Self {
        Self {
            session: Session {
                id: Uuid::new_v4(),
                user_id: new.user.id,
                client_id: new.client_id.to_owned(),
                scope: new.scope.clone(),
                created_at: new.now,
                last_used_at: new.now,
                expires_at: new.expires_at,
                revoked_at: None,
            },
            refresh: new.refresh,
            from: Source::User {
                password_changed_at: new.user.password_changed_at,
            },
        }
    }

    fn from_code(code: CodeStart<'_>) -> Self {
        Self {
            session: Session {
                id: Uuid::new_v4(),
                user_id: Uuid::nil(),
                client_id: code.client_id.to_owned(),
                scope: Scope::default(),
                created_at: code.now,
                last_used_at: code.now,
                expires_at: code.expires_at,
                revoked_at: None,
            },
            refresh: code.refresh,
            from: Source::Code(PresentedCode {
                hash: code.hash.to_vec(),
                redirect_uri: code.redirect_uri.map(str::to_owned),
                code_challenge: code.code_challenge.to_owned(),
            }),
        }
    }

    /// The session as started from `code`, the row of the code it claimed: the code's user and scope.
    fn session_of(&self, code: &authorization_code::Model) -> Session {
        Session {
            user_id: code.user_id,
            scope: Scope::parse(&code.scope).unwrap_or_default(),
            ..self.session.clone()
        }
    }

    /// From the row the start gave back: the code's row as it claimed it and its user's; `None` for a
    /// start without a code.
    fn claimed(
        &self,
        row: &QueryResult,
    ) -> Result<Option<(authorization_code::Model, User)>, sea_orm::DbErr> {
        match self.from {
            Source::Code(_) => Ok(Some((
                authorization_code::Model::from_query_result(row, "")?,
                user::Model::from_query_result(row, "B_")?.into(),
            ))),
            Source::User { .. } => Ok(None),
        }
    }

    /// What began: the session, and when it claimed a code, the code's row and its user.
    fn begun(self, code: Option<(authorization_code::Model, User)>) -> Begun {
        match code {
            Some((row, user)) => Begun {
                session: self.session_of(&row),
                code: Some((grant_of(row), user)),
            },
            None => Begun {
                session: self.session,
                code: None,
            },
        }
    }
}

/// One rotation waiting for its statement.
struct Waiting {
    presented: Vec<u8>,
    successor: Vec<u8>,
    client_id: String,
    now: DateTime<Utc>,
    /// The successor's idle expiry, before the session's own caps it.
    expires_at: DateTime<Utc>,
    answer: oneshot::Sender<Result<Option<Done>, String>>,
}

/// What the statement says of a token it spent.
struct Done {
    spent: Spent,
    last_used_at: DateTime<Utc>,
}

/// How stale a session's `last_used_at` may be. It is kept to the minute: a session refreshed more
/// often than that would otherwise cost one more write per rotation for a figure no one reads to the
/// second.
const LAST_USED_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl SessionStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            spender: Arc::default(),
            starter: Arc::default(),
        }
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
            .exec(self.db.writer())
            .await
        {
            tracing::warn!(sid = %id, error = %e, "could not record a session's last use");
        }
    }

    /// Starts `starting`: in one statement on PostgreSQL, on SQLite in the transaction of the starts
    /// waiting beside it.
    async fn begin(&self, starting: Starting) -> Result<Option<Begun>, Error> {
        if self.db.writer().get_database_backend() == DbBackend::Postgres {
            return Ok(start_in_one_statement(self.db.writer(), starting).await?);
        }
        let starter = self.starter.get_or_init(|| {
            let (sender, waiting) = mpsc::channel(1024);
            tokio::spawn(start_in_batches(self.db.clone(), waiting));
            sender
        });
        let stopped = || Error::Internal(anyhow::anyhow!("the session start task stopped"));
        let (answer, answered) = oneshot::channel();
        starter
            .send((starting, answer))
            .await
            .map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(|e| Error::Internal(anyhow::anyhow!(e)))
    }

    async fn token(&self, hash: &[u8]) -> Result<Option<refresh_token::Model>, sea_orm::DbErr> {
        refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash.to_vec()))
            .unique(self.db.reader())
            .await
    }
}

#[async_trait]
impl ports::Sessions for SessionStore {
    async fn start(&self, new: NewSession<'_>) -> Result<Option<Session>, Error> {
        Ok(self.begin(Starting::new(new)).await?.map(|b| b.session))
    }

    async fn start_from_code(&self, code: CodeStart<'_>) -> Result<Option<CodeStarted>, Error> {
        Ok(self
            .begin(Starting::from_code(code))
            .await?
            .and_then(|Begun { session, code }| {
                code.map(|(grant, user)| CodeStarted {
                    session,
                    grant,
                    user,
                })
            }))
    }

    /// Waits for the next statement of [`spend_in_batches`].
    async fn spend(&self, spend: ports::Spend<'_>) -> Result<Option<Spent>, Error> {
        let spender = self.spender.get_or_init(|| {
            let (sender, waiting) = mpsc::channel(1024);
            tokio::spawn(spend_in_batches(self.db.writer().clone(), waiting));
            sender
        });
        let stopped = || Error::Internal(anyhow::anyhow!("the rotation task stopped"));
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            presented: spend.presented.to_vec(),
            successor: spend.successor.to_vec(),
            client_id: spend.client_id.to_owned(),
            now: spend.now,
            expires_at: spend.expires_at,
            answer,
        };
        spender.send(waiting).await.map_err(|_| stopped())?;
        let done = answered
            .await
            .map_err(|_| stopped())?
            .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
        let Some(Done {
            spent,
            last_used_at,
        }) = done
        else {
            return Ok(None);
        };
        self.touch(spent.session_id, last_used_at, spend.now).await;
        Ok(Some(spent))
    }

    /// The token, its session and its user in one read.
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshToken>, Error> {
        let found = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(hash.to_vec()))
            .find_also_related(session::Entity)
            .and_also_related(user::Entity)
            .all(self.db.reader())
            .await?
            .pop();
        let Some((token, Some(session), user)) = found else {
            return Ok(None);
        };
        Ok(Some(RefreshToken {
            scope: Scope::parse(&token.scope).unwrap_or_default(),
            created_at: token.created_at,
            expires_at: token.expires_at,
            session: session.into(),
            user: user.map(Into::into),
        }))
    }

    async fn successor(&self, hash: &[u8]) -> Result<Option<SuccessorToken>, Error> {
        Ok(self.token(hash).await?.map(|t| SuccessorToken {
            session_id: t.session_id,
            created_at: t.created_at,
            expires_at: t.expires_at,
        }))
    }

    async fn find(&self, id: Uuid) -> Result<Option<Session>, Error> {
        Ok(session::Entity::find_by_id(id)
            .unique(self.db.reader())
            .await?
            .map(Into::into))
    }

    async fn list_live(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<Session>, Error> {
        Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now))
            .filter(Expr::exists(unexpired_token(now)))
            .order_by_desc(session::Column::CreatedAt)
            .all(self.db.reader())
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn revoke(
        &self,
        id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error> {
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

    async fn revoke_sign_in(
        &self,
        id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error> {
        let now = Utc::now();
        let txn = super::begin_write(&self.db).await?;
        end_sign_ins(&txn, sign_in_session::Column::Id.eq(id), now).await?;
        let ids = revoke_live(&txn, session::Column::SignInSessionId.eq(id), reason, now).await?;
        let recorded = Revocation::sessions(ids, until);
        append(&txn, &recorded).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    async fn revoke_all_of_user(
        &self,
        user_id: Uuid,
        reason: &str,
        until: DateTime<Utc>,
    ) -> Result<Vec<Revocation>, Error> {
        let txn = super::begin_write(&self.db).await?;
        // What a password change or a disable does by updating the user's row: see [`revoke_all_in`].
        user::Entity::find_by_id(user_id)
            .select_only()
            .column(user::Column::Id)
            .lock(LockType::NoKeyUpdate)
            .into_tuple::<Uuid>()
            .all(&txn)
            .await?;
        let recorded = revoke_all_in(&txn, user_id, reason, until).await?;
        txn.commit().await?;
        Ok(recorded)
    }
}

/// Inside `txn`: revokes every live session of a user, and records that and a `sub` entry voiding every
/// token issued to them before this second (one from this second is void by its session).
///
/// On PostgreSQL the rows are taken in the order a session start takes them, the user's (which the
/// caller has locked already), then the sign-ins', then the sessions': a start in flight is waited for
/// and its session found and revoked, and a logout (a sign-in, then its sessions) cannot deadlock with
/// this.
pub(crate) async fn revoke_all_in(
    txn: &impl ConnectionTrait,
    user_id: Uuid,
    reason: &str,
    until: DateTime<Utc>,
) -> Result<Vec<Revocation>, sea_orm::DbErr> {
    let now = Utc::now();
    // The browser's sign-in sessions end with the rest.
    end_sign_ins(txn, sign_in_session::Column::UserId.eq(user_id), now).await?;
    let ids = revoke_live(txn, session::Column::UserId.eq(user_id), reason, now).await?;
    let recorded =
        Revocation::subject_and_sessions(user_id.to_string(), now.timestamp(), ids, until);
    append(txn, &recorded).await?;
    Ok(recorded)
}

/// Inside `txn`: revokes the live sessions `which` selects; their ids.
async fn revoke_live(
    txn: &impl ConnectionTrait,
    which: impl IntoCondition,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    let ids: Vec<Uuid> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(which)
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
    Ok(ids)
}

/// Inside `txn`: ends the live browser sign-in sessions `which` selects.
async fn end_sign_ins(
    txn: &impl ConnectionTrait,
    which: impl IntoCondition,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    sign_in_session::Entity::update_many()
        .col_expr(sign_in_session::Column::RevokedAt, Expr::value(now))
        .filter(which)
        .filter(sign_in_session::Column::RevokedAt.is_null())
        .exec(txn)
        .await?;
    Ok(())
}

/// A token of the session in the outer query that is unexpired at `at`: without one, the session has
/// gone idle (one that never had a refresh token is idle from the start).
pub(super) fn unexpired_token(at: DateTime<Utc>) -> SelectStatement {
    use refresh_token::Column as T;
    let t = Alias::new("t");
    Query::select()
        .expr(Expr::val(1))
        .from_as(refresh_token::Entity, t.clone())
        .and_where(
            Expr::col((t.clone(), T::SessionId)).equals((session::Entity, session::Column::Id)),
        )
        .and_where(Expr::col((t, T::ExpiresAt)).gt(at))
        .to_owned()
}

/// Starts each session of `batch` that may start, in one transaction: one commit and one WAL write for
/// them all, and one round trip to the writer for each start, its [`Steps`] run one after another. So a
/// start whose check fails writes nothing, and a later redemption of a code claimed here finds it
/// claimed. Those that started, by session id, each with the row of the code it claimed and that code's
/// user.
async fn start_in_transaction(
    db: &Db,
    batch: &[Starting],
) -> Result<HashMap<Uuid, Option<(authorization_code::Model, User)>>, sea_orm::DbErr> {
    let txn = super::begin_write(db).await?;
    let mut started = HashMap::with_capacity(batch.len());
    for s in batch {
        let steps = Steps::of(s, &Chain::Tables)?;
        if let Some(row) = txn.query_one_raw(steps.in_sequence()).await? {
            started.insert(s.session.id, s.claimed(&row)?);
        }
    }
    txn.commit().await?;
    Ok(started)
}

/// Starts `s` in one statement, which PostgreSQL makes atomic as a transaction is, in one round trip:
/// its [`Steps`] as `WITH` queries. Of concurrent redemptions of one code the later waits on the
/// code's row lock and then claims nothing.
async fn start_in_one_statement(
    db: &DatabaseConnection,
    s: Starting,
) -> Result<Option<Begun>, sea_orm::DbErr> {
    let steps = Steps::of(&s, &Chain::With)?;
    let mut with = WithClause::new();
    if let Some(mut claim) = steps.claim {
        with.cte(cte(CLAIMED, claim.returning_all().to_owned()));
    }
    let mut session = steps.session;
    session.returning(Query::returning().columns([session::Column::Id, session::Column::Scope]));
    with.cte(cte(STARTED, session));
    if let Some(token) = steps.token {
        with.cte(cte("token", token));
    }
    let Some(row) = db.query_one(&with.query(steps.result)).await? else {
        return Ok(None);
    };
    let code = s.claimed(&row)?;
    Ok(Some(s.begun(code)))
}

const CLAIMED: &str = "claimed";
const STARTED: &str = "started";

/// A start, step by step, each step selecting from the one before: a code's claim, as [`claim`] says;
/// the session, from the claimed row (or, without a code, only as [`as_verified`] says); its first
/// token, from the session; and what the start gives back, a row only when it started: the session's
/// id and, for a code, its row as claimed and its user's. So a check that fails writes nothing.
struct Steps {
    claim: Option<UpdateStatement>,
    session: InsertStatement,
    token: Option<InsertStatement>,
    result: SelectStatement,
}

/// Where each of [`Steps`] finds the rows the step before wrote.
enum Chain {
    /// PostgreSQL: in the `WITH` query named for them ([`CLAIMED`], [`STARTED`]); one query of a
    /// statement does not see another's writes in their table.
    With,
    /// SQLite: in their tables, by key, each step a statement of its own.
    Tables,
}

impl Chain {
    fn claimed(&self) -> DynIden {
        match self {
            Self::With => Alias::new(CLAIMED).into_iden(),
            Self::Tables => authorization_code::Entity.into_iden(),
        }
    }

    fn started(&self) -> DynIden {
        match self {
            Self::With => Alias::new(STARTED).into_iden(),
            Self::Tables => session::Entity.into_iden(),
        }
    }

    /// Makes `select` select from the row `s` claimed: by the code's hash and the session the claim
    /// wrote into it.
    fn select_claimed(&self, select: &mut SelectStatement, s: &Starting, code: &PresentedCode) {
        use authorization_code::Column as C;
        let claimed = self.claimed();
        select.from(claimed.clone());
        if let Self::Tables = self {
            select
                .and_where(Expr::col((claimed.clone(), C::CodeHash)).eq(code.hash.clone()))
                .and_where(Expr::col((claimed, C::SessionId)).eq(s.session.id));
        }
    }

    /// Makes `select` select from the session `s` started.
    fn select_started(&self, select: &mut SelectStatement, s: &Starting) {
        let started = self.started();
        select.from(started.clone());
        if let Self::Tables = self {
            select.and_where(Expr::col((started, session::Column::Id)).eq(s.session.id));
        }
    }
}

impl Steps {
    fn of(s: &Starting, chain: &Chain) -> Result<Self, sea_orm::DbErr> {
        use authorization_code::Column as C;
        let claimed = chain.claimed();
        let started = chain.started();
        let (claim, row) = match &s.from {
            Source::Code(code) => {
                let of_code = |c: C| Expr::col((claimed.clone(), c));
                let mut row = session_row(
                    &s.session,
                    [
                        of_code(C::UserId),
                        of_code(C::Scope),
                        of_code(C::SignInSessionId),
                    ],
                );
                chain.select_claimed(&mut row, s, code);
                (Some(claim(s, code)), row)
            }
            Source::User { .. } => {
                let mut row = session_row(&s.session, own(&s.session, None));
                as_verified(&mut row, s);
                (None, row)
            }
        };
        let token = match &s.refresh {
            Some((hash, idle_expiry)) => {
                let scope = Expr::col((started.clone(), session::Column::Scope));
                let mut token = first_token(&s.session, hash, *idle_expiry, scope);
                chain.select_started(&mut token, s);
                Some(insert_token(token)?)
            }
            None => None,
        };
        let mut result = Query::select();
        result.column((started, session::Column::Id));
        chain.select_started(&mut result, s);
        if let Source::Code(code) = &s.from {
            // The code's row as claimed, and its user's, prefixed as a joined select prefixes them.
            result.column((claimed.clone(), Asterisk));
            for column in user::Column::iter() {
                result.expr_as(
                    Expr::col((user::Entity, column)),
                    Alias::new(format!("B_{}", sea_orm::IdenStatic::as_str(&column))),
                );
            }
            chain.select_claimed(&mut result, s, code);
            result.inner_join(
                user::Entity,
                Expr::col((user::Entity, user::Column::Id)).equals((claimed, C::UserId)),
            );
        }
        Ok(Self {
            claim,
            session: insert_session(row)?,
            token,
            result,
        })
    }

    /// The steps as SQLite statements in one query, run one after another in one round trip to the
    /// connection's thread; only the last gives rows.
    fn in_sequence(&self) -> Statement {
        let mut sql = Vec::with_capacity(4);
        let mut values = Vec::new();
        let mut add = |(text, Values(mut v)): (String, Values)| {
            sql.push(text);
            values.append(&mut v);
        };
        if let Some(claim) = &self.claim {
            add(claim.build(SqliteQueryBuilder));
        }
        add(self.session.build(SqliteQueryBuilder));
        if let Some(token) = &self.token {
            add(token.build(SqliteQueryBuilder));
        }
        add(self.result.build(SqliteQueryBuilder));
        Statement::from_sql_and_values(DbBackend::Sqlite, sql.join(";\n"), values)
    }
}

fn cte(
    name: &str,
    query: impl Into<sea_orm::sea_query::SubQueryStatement>,
) -> CommonTableExpression {
    CommonTableExpression::new()
        .query(query)
        .table_name(Alias::new(name))
        .to_owned()
}

/// The new session's row, as the values of a `SELECT` still to be given its source; its user, scope and
/// browser sign-in as `of` gives them.
fn session_row(session: &Session, [user, scope, sign_in]: [Expr; 3]) -> SelectStatement {
    Query::select()
        .exprs([
            Expr::value(session.id),
            user,
            Expr::value(session.client_id.clone()),
            scope,
            Expr::value(session.created_at),
            Expr::value(session.last_used_at),
            Expr::value(session.expires_at),
            sign_in,
        ])
        .to_owned()
}

/// The user, scope and browser sign-in of [`session_row`], as values.
fn own(session: &Session, sign_in: Option<Uuid>) -> [Expr; 3] {
    [
        Expr::value(session.user_id),
        Expr::value(session.scope.to_string()),
        Expr::value(sign_in),
    ]
}

fn insert_session(row: SelectStatement) -> Result<InsertStatement, sea_orm::DbErr> {
    use session::Column as S;
    let columns = [
        S::Id,
        S::UserId,
        S::ClientId,
        S::Scope,
        S::CreatedAt,
        S::LastUsedAt,
        S::ExpiresAt,
        S::SignInSessionId,
    ];
    insert_from(session::Entity, columns, row)
}

/// The claim of the code `s` redeems, as [`sign_in::claim`] conditions it, and only while the code's
/// user, client and browser sign-in are as it was issued ([`as_verified`]).
fn claim(s: &Starting, code: &PresentedCode) -> UpdateStatement {
    let mut verified = Query::select();
    verified.expr(Expr::value(1));
    as_verified(&mut verified, s);
    sign_in::claim(
        &code.hash,
        s.session.created_at,
        s.session.id,
        &s.session.client_id,
        code.redirect_uri.as_deref(),
        &code.code_challenge,
    )
    .and_where(Expr::exists(verified))
    .to_owned()
}

/// Makes `select` give a row only from the user's row as it was verified, and while the client exists:
/// a start for a client deleted since it was authenticated starts nothing, rather than failing the
/// session's foreign key (and on SQLite the transaction it shares with the starts waiting beside it).
/// A code's start, run inside its claim, takes the code's user as the code was issued, and only while
/// the browser sign-in the code was issued through is live: a logout in between ends it. On
/// PostgreSQL the three rows are locked, so a password change, a disable, a logout (of the sign-in or
/// everywhere) or a deletion either commits first (and nothing is selected) or waits for the session
/// and then ends it; SQLite has one writer at a time.
fn as_verified(select: &mut SelectStatement, s: &Starting) {
    // The user's row is locked before the sign-in's, in a table of its own that the sign-in's check
    // refers to (a check that did not would be run before it): a password change holds that row and
    // then ends the user's sign-ins, so a start holding a sign-in's lock while it waited for the user's
    // would deadlock.
    let verified = Alias::new("verified_user");
    let mut user = Query::select();
    user.column((user::Entity, user::Column::Id));
    match &s.from {
        Source::User {
            password_changed_at,
        } => from_user_as_verified(&mut user, s.session.user_id, *password_changed_at),
        Source::Code(_) => from_user_as_issued(&mut user),
    }
    select.from_subquery(user, verified.clone());
    select.and_where(Expr::exists(client_exists(&s.session.client_id)));
    if let Source::Code(_) = &s.from {
        let through = (
            authorization_code::Entity,
            authorization_code::Column::SignInSessionId,
        );
        let live = Query::select()
            .expr(Expr::value(1))
            .from(sign_in_session::Entity)
            .and_where(
                Expr::col((sign_in_session::Entity, sign_in_session::Column::Id)).equals(through),
            )
            .and_where(Expr::col(sign_in_session::Column::RevokedAt).is_null())
            .and_where(
                Expr::col((sign_in_session::Entity, sign_in_session::Column::UserId))
                    .equals((verified, user::Column::Id)),
            )
            .lock_shared()
            .to_owned();
        select.and_where(Expr::col(through).is_null().or(Expr::exists(live)));
    }
}

/// The client's row while it exists. Key-share-locked on PostgreSQL, the lock a foreign key to it takes,
/// taken here, where waiting for a deletion in flight can still select nothing.
pub(super) fn client_exists(id: &str) -> SelectStatement {
    Query::select()
        .expr(Expr::value(1))
        .from(client::Entity)
        .and_where(Expr::col(client::Column::ClientId).eq(id))
        .lock(LockType::KeyShare)
        .to_owned()
}

/// Makes `select` give a row only from the user's row as it was verified: active, and with the password
/// it had then. Share-locked on PostgreSQL, as [`as_verified`] says.
pub(super) fn from_user_as_verified(
    select: &mut SelectStatement,
    user_id: Uuid,
    password_changed_at: DateTime<Utc>,
) {
    select
        .from(user::Entity)
        .and_where(Expr::col(user::Column::Id).eq(user_id))
        .and_where(Expr::col(user::Column::IsActive).eq(true))
        .and_where(Expr::col(user::Column::PasswordChangedAt).eq(password_changed_at))
        .lock_shared();
}

/// Makes `select` give a row only from the user of the code in the outer query as they were when it was
/// issued: active, and with no password change since they signed in. Share-locked on PostgreSQL, as
/// [`as_verified`] says.
fn from_user_as_issued(select: &mut SelectStatement) {
    use authorization_code::{Column as C, Entity as Code};
    select
        .from(user::Entity)
        .and_where(Expr::col((user::Entity, user::Column::Id)).equals((Code, C::UserId)))
        .and_where(Expr::col(user::Column::IsActive).eq(true))
        .and_where(Expr::col(user::Column::PasswordChangedAt).lte(Expr::col((Code, C::AuthTime))))
        .lock_shared();
}

/// A session's first refresh token's row, as the values of a `SELECT`, with the session's `scope`.
fn first_token(
    session: &Session,
    hash: &[u8],
    idle_expiry: DateTime<Utc>,
    scope: Expr,
) -> SelectStatement {
    Query::select()
        .exprs([
            Expr::value(Uuid::new_v4()),
            Expr::value(session.id),
            Expr::value(hash.to_vec()),
            scope,
            Expr::value(session.created_at),
            // A token never outlives its session.
            Expr::value(Ord::min(idle_expiry, session.expires_at)),
        ])
        .to_owned()
}

/// A refresh token's row from `row`: a session's first, or the successors a rotation inserts.
fn insert_token(row: SelectStatement) -> Result<InsertStatement, sea_orm::DbErr> {
    use refresh_token::Column as T;
    let columns = [
        T::Id,
        T::SessionId,
        T::TokenHash,
        T::Scope,
        T::CreatedAt,
        T::ExpiresAt,
    ];
    insert_from(refresh_token::Entity, columns, row)
}

/// `INSERT INTO table (columns) SELECT …`.
pub(super) fn insert_from<C: IntoIden>(
    table: impl IntoTableRef,
    columns: impl IntoIterator<Item = C>,
    row: SelectStatement,
) -> Result<InsertStatement, sea_orm::DbErr> {
    Ok(Query::insert()
        .into_table(table)
        .columns(columns)
        .select_from(row)
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
        .to_owned())
}

/// Spends whatever rotations are waiting, up to [`MAX_BATCH`], in one statement, and again until every
/// [`SessionStore`] is gone.
async fn spend_in_batches(db: DatabaseConnection, mut waiting: mpsc::Receiver<Waiting>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A token presented twice at once is spent by its first presentation. The others are answered
        // after the statement, so that the path they take next finds the successor and calls it a
        // retry or reuse.
        let mut seen = HashSet::new();
        let (first, again): (Vec<Waiting>, Vec<Waiting>) = batch
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

/// Starts whatever sessions are waiting, up to [`MAX_BATCH`], in one SQLite transaction, and again
/// until every [`SessionStore`] is gone.
async fn start_in_batches(db: Db, mut waiting: mpsc::Receiver<(Starting, Answer)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A request gone (its client hung up) while it waited starts nothing: its code stays unused.
        batch.retain(|(_, answer)| !answer.is_closed());
        // Every start is tried, in order: of a code presented twice the first presentation that matches
        // it claims it, and the others, answered after the commit, find it claimed.
        let (starts, answers): (Vec<Starting>, Vec<Answer>) = batch.drain(..).unzip();
        let mut started = start_in_transaction(&db, &starts)
            .await
            .map_err(|e| e.to_string());
        for (s, answer) in starts.into_iter().zip(answers) {
            let begun = match &mut started {
                Ok(started) => Ok(started.remove(&s.session.id).map(|code| s.begun(code))),
                Err(e) => Err(e.clone()),
            };
            let _ = answer.send(begun);
        }
    }
}

/// The statement that spends tokens, keyed by the successor's hash. Inserting the successor is the
/// spend: its hash is derived from the token's, so of any number of concurrent rotations exactly one
/// inserts it. It is inserted from the presented token's row only when the token, its session and its
/// user are all live, with the token's scope, and `RETURNING` brings back what the access token says.
async fn spend_all(
    db: &DatabaseConnection,
    batch: &[Waiting],
) -> Result<HashMap<Vec<u8>, Done>, sea_orm::DbErr> {
    use refresh_token::Column as T;
    use session::Column as S;
    let (tokens, sessions, users) = (refresh_token::Entity, session::Entity, user::Entity);
    // One SELECT per token, joined by UNION ALL: each finds its token by equality on the unique hash,
    // so the planner always starts there. (A join to a VALUES list of the tokens let PostgreSQL, with
    // statistics from when the tables were small, start from a scan of every session instead.)
    let live = |s: &Waiting| {
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
    let insert = insert_token(select)?
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
            Done {
                spent: Spent {
                    session_id: row.try_get_by_index(1)?,
                    user_id: row.try_get_by_index(3)?,
                    username: row.try_get_by_index(4)?,
                    scope: Scope::parse(&scope).unwrap_or_default(),
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
        ports::{NewUser, Sessions, Users, later},
        store::{clients::ClientStore, users::UserStore},
        value::username::Username,
    };

    const TTL: std::time::Duration = std::time::Duration::from_secs(3600);

    /// A SQLite file with one user, the default client, and `n` sessions whose first tokens hash to
    /// `[i; 32]`.
    async fn sessions(n: u8) -> (tempfile::TempDir, Db, Vec<Uuid>) {
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
                email_verified: false,
                password_hash: "not a hash".into(),
                is_admin: false,
            })
            .await
            .unwrap();
        let store = SessionStore::new(db.clone());
        let mut ids = Vec::new();
        for i in 0..n {
            let s = store
                .start(new_session(&user, &scope, i, Utc::now()))
                .await
                .unwrap()
                .unwrap();
            ids.push(s.id);
        }
        (dir, db, ids)
    }

    /// A session of client `c` for `user`, whose first refresh token hashes to `[token; 32]`.
    fn new_session<'a>(
        user: &'a crate::value::account::User,
        scope: &'a Scope,
        token: u8,
        now: DateTime<Utc>,
    ) -> NewSession<'a> {
        NewSession {
            user,
            client_id: "c",
            scope,
            now,
            expires_at: later(now, TTL),
            refresh: Some((vec![token; 32], later(now, TTL))),
        }
    }

    async fn alice(db: &Db) -> crate::value::account::User {
        UserStore::new(db.clone())
            .find_by_username("alice")
            .await
            .unwrap()
            .unwrap()
    }

    /// What the code tests start from: a SQLite file with `n` sessions as [`sessions`] makes them, and an
    /// unused code of client `c` for alice, hashing to `[7; 32]`.
    struct WithCode {
        _dir: tempfile::TempDir,
        db: Db,
        user: crate::value::account::User,
        scope: Scope,
        now: DateTime<Utc>,
        code: [u8; 32],
    }

    async fn with_code(n: u8) -> WithCode {
        let (_dir, db, _) = sessions(n).await;
        let user = alice(&db).await;
        let scope = Scope::parse("profile").unwrap();
        let now = Utc::now();
        let code = [7; 32];
        store_code(&db, &code, &user, &scope, now, None).await;
        WithCode {
            _dir,
            db,
            user,
            scope,
            now,
            code,
        }
    }

    /// The redemption of `code` by client `c` with the challenge it was issued with, whose first
    /// refresh token hashes to `[token; 32]`.
    fn code_start(code: &[u8], token: u8, now: DateTime<Utc>) -> CodeStart<'_> {
        CodeStart {
            hash: code,
            client_id: "c",
            redirect_uri: None,
            code_challenge: "challenge",
            now,
            expires_at: later(now, TTL),
            refresh: Some((vec![token; 32], later(now, TTL))),
        }
    }

    /// Stores a code of client `c` for `user`, hashing to `code`, with the challenge [`code_start`]
    /// presents, asked for with `redirect_uri`.
    async fn store_code(
        db: &Db,
        code: &[u8],
        user: &User,
        scope: &Scope,
        now: DateTime<Utc>,
        redirect_uri: Option<&str>,
    ) {
        use crate::{
            ports::{CodeGrant, Codes, NewCode},
            store::sign_in::SignInStore,
        };
        let grant = CodeGrant {
            client_id: "c".into(),
            user_id: user.id,
            sign_in_session: None,
            redirect_uri: redirect_uri.map(str::to_owned),
            code_challenge: "challenge".into(),
            scope: scope.clone(),
            nonce: None,
            auth_time: now,
        };
        let new_code = NewCode {
            hash: code.to_vec(),
            grant: &grant,
            expires_at: later(now, TTL),
        };
        let created = Codes::create(&SignInStore::new(db.clone()), new_code).await;
        assert!(created.unwrap(), "the code's client exists");
    }

    type Answered = oneshot::Receiver<Result<Option<Begun>, String>>;

    /// `starts` waiting, in order, for a task not yet running, so that they share one transaction; and
    /// where each will be answered.
    fn waiting(starts: Vec<Starting>) -> (mpsc::Receiver<(Starting, Answer)>, Vec<Answered>) {
        let (sender, waiting) = mpsc::channel(starts.len());
        let answers = starts
            .into_iter()
            .map(|starting| {
                let (answer, answered) = oneshot::channel();
                sender.try_send((starting, answer)).ok().unwrap();
                answered
            })
            .collect();
        (waiting, answers)
    }

    async fn count<E: EntityTrait<Model: Sync>>(db: &Db) -> u64 {
        use sea_orm::PaginatorTrait;
        E::find().count(db.reader()).await.unwrap()
    }

    async fn code_row(db: &Db, code: &[u8]) -> authorization_code::Model {
        authorization_code::Entity::find_by_id(code.to_vec())
            .unique(db.reader())
            .await
            .unwrap()
            .unwrap()
    }

    /// A redemption claims its code as its session starts, and comes back with what the code stood for
    /// and its user: a second redemption finds it claimed and writes nothing.
    #[tokio::test]
    async fn a_code_starts_one_session_and_a_second_redemption_writes_nothing() {
        let WithCode {
            _dir,
            db,
            user,
            scope,
            now,
            code,
        } = with_code(0).await;
        let store = SessionStore::new(db.clone());

        let first = store.start_from_code(code_start(&code, 1, now)).await;
        let second = store.start_from_code(code_start(&code, 2, now)).await;

        let first = first.unwrap().unwrap();
        assert_eq!(
            (first.session.user_id, &first.session.scope),
            (user.id, &scope)
        );
        assert_eq!((first.grant.user_id, &first.grant.scope), (user.id, &scope));
        assert_eq!(first.user, user);
        assert!(second.unwrap().is_none());
        assert_eq!(count::<session::Entity>(&db).await, 1);
        assert_eq!(count::<refresh_token::Entity>(&db).await, 1);
        let row = code_row(&db, &code).await;
        assert_eq!(row.session_id, Some(first.session.id));
    }

    /// A redemption that presents anything but what the code was issued with, or comes after its user
    /// changed their password or was disabled, starts nothing and leaves the code unused.
    #[tokio::test]
    async fn a_redemption_unlike_its_code_starts_nothing() {
        use crate::store::clients::ClientStore;
        let WithCode {
            _dir,
            db,
            user,
            scope,
            now,
            code,
        } = with_code(0).await;
        ClientStore::new(db.clone())
            .ensure_default("other", &scope)
            .await
            .unwrap();
        // A second code, asked for with a redirect URI.
        let with_uri = [9; 32];
        let uri = Some("https://app.example/cb");
        store_code(&db, &with_uri, &user, &scope, now, uri).await;
        let store = SessionStore::new(db.clone());
        let other_code = [8; 32];
        let presentations = [
            CodeStart {
                hash: &other_code,
                ..code_start(&code, 1, now)
            },
            CodeStart {
                client_id: "other",
                ..code_start(&code, 1, now)
            },
            CodeStart {
                code_challenge: "another challenge",
                ..code_start(&code, 1, now)
            },
            CodeStart {
                now: later(now, TTL),
                ..code_start(&code, 1, now)
            },
            code_start(&with_uri, 1, now),
            CodeStart {
                redirect_uri: Some("https://app.example/cb/"),
                ..code_start(&with_uri, 1, now)
            },
        ];
        for presented in presentations {
            assert!(store.start_from_code(presented).await.unwrap().is_none());
        }
        assert_eq!(count::<session::Entity>(&db).await, 0);
        assert_eq!(count::<refresh_token::Entity>(&db).await, 0);
        assert_eq!(code_row(&db, &with_uri).await.used_at, None);
        // As asked for, the code starts its session.
        let as_asked = CodeStart {
            redirect_uri: Some("https://app.example/cb"),
            ..code_start(&with_uri, 2, now)
        };
        assert!(store.start_from_code(as_asked).await.unwrap().is_some());
        let users = UserStore::new(db.clone());
        users
            .set_active(user.id, false, later(now, TTL))
            .await
            .unwrap();
        assert!(
            store
                .start_from_code(code_start(&code, 1, now))
                .await
                .unwrap()
                .is_none()
        );
        users
            .set_active(user.id, true, later(now, TTL))
            .await
            .unwrap();
        users
            .change_password(user.id, "changed".into(), later(now, TTL), None)
            .await
            .unwrap();
        assert!(
            store
                .start_from_code(code_start(&code, 1, now))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(code_row(&db, &code).await.used_at, None);
    }

    /// A presentation of a code that does not match it, waiting in the same transaction ahead of the
    /// one that does (someone with an intercepted code but not its verifier), does not keep the right
    /// one from starting its session.
    #[tokio::test]
    async fn a_wrong_presentation_ahead_of_the_right_one_does_not_stop_it() {
        let WithCode {
            _dir,
            db,
            now,
            code,
            ..
        } = with_code(0).await;
        let starts = vec![
            Starting::from_code(CodeStart {
                code_challenge: "an attacker's guess",
                ..code_start(&code, 1, now)
            }),
            Starting::from_code(code_start(&code, 2, now)),
        ];
        let (waiting, answers) = waiting(starts);

        tokio::spawn(start_in_batches(db.clone(), waiting));

        let mut started = Vec::new();
        for answered in answers {
            started.push(answered.await.unwrap().unwrap().is_some());
        }
        assert_eq!(started, [false, true]);
        assert_eq!(count::<session::Entity>(&db).await, 1);
    }

    /// Starts that wait together share one transaction, and each is answered as if it ran alone: of a
    /// code presented twice at once the first presentation starts a session; a user whose password
    /// changed since it was verified, a client deleted meanwhile and a request gone while it waited
    /// start none; and nothing is written for those that did not start.
    #[tokio::test]
    async fn starts_that_wait_together_are_each_answered_as_if_alone() {
        let WithCode {
            _dir,
            db,
            user,
            scope,
            now,
            code,
        } = with_code(0).await;
        let changed = crate::value::account::User {
            password_changed_at: user.password_changed_at - chrono::TimeDelta::seconds(1),
            ..user.clone()
        };
        let of_user = |user, token, client_id| {
            Starting::new(NewSession {
                client_id,
                ..new_session(user, &scope, token, now)
            })
        };
        let starts = vec![
            Starting::from_code(code_start(&code, 1, now)),
            Starting::from_code(code_start(&code, 2, now)),
            of_user(&changed, 3, "c"),
            of_user(&user, 4, "c"),
            of_user(&user, 5, "deleted"),
            of_user(&user, 6, "c"),
        ];
        let (waiting, mut answers) = waiting(starts);
        // The last one's request is gone before the task starts.
        drop(answers.pop());

        tokio::spawn(start_in_batches(db.clone(), waiting));

        let mut started = Vec::new();
        for answered in answers {
            started.push(answered.await.unwrap().unwrap());
        }
        let which: Vec<bool> = started.iter().map(Option::is_some).collect();
        assert_eq!(which, [true, false, false, true, false]);
        let redeemed = started[0].as_ref().unwrap();
        assert_eq!(redeemed.code.as_ref().unwrap().1, user);
        assert_eq!(count::<session::Entity>(&db).await, 2);
        let store = SessionStore::new(db.clone());
        for (token, exists) in [
            (1, true),
            (2, false),
            (3, false),
            (4, true),
            (5, false),
            (6, false),
        ] {
            assert_eq!(store.token(&[token; 32]).await.unwrap().is_some(), exists);
        }
        let first = store.token(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(
            code_row(&db, &code).await.session_id,
            Some(first.session_id)
        );
        assert_eq!(first.session_id, redeemed.session.id);
    }

    /// A transaction that fails fails every start in it, a code's second presentation too, and writes
    /// nothing: the code stays unused.
    #[tokio::test]
    async fn a_failed_transaction_answers_every_start_in_it_with_its_error() {
        let WithCode {
            _dir,
            db,
            now,
            code,
            ..
        } = with_code(1).await;
        // The first token's hash is the existing session's: its insert fails the transaction.
        let starts = [0, 2].map(|token| Starting::from_code(code_start(&code, token, now)));
        let (waiting, answers) = waiting(starts.into());

        tokio::spawn(start_in_batches(db.clone(), waiting));

        for answered in answers {
            assert!(answered.await.unwrap().is_err());
        }
        assert_eq!(count::<session::Entity>(&db).await, 1);
        let row = code_row(&db, &code).await;
        assert_eq!((row.used_at, row.session_id), (None, None));
    }

    fn spend(
        presented: u8,
        successor: u8,
        client_id: &str,
    ) -> (Waiting, oneshot::Receiver<Result<Option<Done>, String>>) {
        let (answer, answered) = oneshot::channel();
        let now = Utc::now();
        let spend = Waiting {
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
        let batch: Vec<Waiting> = [
            (0, 100, "c"),
            (1, 101, "c"),
            (2, 102, "other"),
            (9, 109, "c"),
        ]
        .into_iter()
        .map(|(p, s, c)| spend(p, s, c).0)
        .collect();

        let spent = spend_all(db.writer(), &batch).await.unwrap();

        // The two live tokens of this client are spent, each in its own session; another client's token
        // and one that does not exist are not.
        assert_eq!(spent.len(), 2);
        assert_eq!(spent[&vec![100; 32]].spent.session_id, ids[0]);
        assert_eq!(spent[&vec![101; 32]].spent.session_id, ids[1]);
        assert_eq!(spent[&vec![101; 32]].spent.username, "alice");
        let store = SessionStore::new(db.clone());
        assert!(store.token(&[102; 32]).await.unwrap().is_none());
        // Spent means the successor exists: the same statement again inserts nothing.
        assert!(
            spend_all(db.writer(), &batch[..2])
                .await
                .unwrap()
                .is_empty()
        );
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

        tokio::spawn(spend_in_batches(db.writer().clone(), waiting));

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
