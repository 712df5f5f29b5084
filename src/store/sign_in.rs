//! Authorization codes and browser sign-in sessions, as [`ports::Codes`] and [`ports::SignInSessions`]. A
//! code is claimed by the session store, in the statement or transaction that starts its session
//! ([`claim`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    sea_query::{Condition, Expr, ExprTrait, Query, SelectStatement, UpdateStatement},
};
use uuid::Uuid;

use super::{
    Db, Unique,
    sessions::{client_exists, from_user_as_verified, insert_from},
};
use crate::{
    entity::{authorization_code, sign_in_session, user},
    error::Error,
    ports::{self, CodeGrant, NewCode, Redeemed, SignInSession},
    value::{account::User, scope::Scope},
};

#[derive(Clone)]
pub struct SignInStore {
    db: Db,
}

impl SignInStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ports::Codes for SignInStore {
    /// One `INSERT … SELECT` that inserts only while the client exists, and on PostgreSQL locks its
    /// row, so that a deletion in flight is waited for rather than failing the code's foreign key.
    async fn create(&self, new: NewCode<'_>) -> Result<bool, Error> {
        use authorization_code::Column as C;
        let g = new.grant;
        let row = Query::select()
            .exprs([
                Expr::value(new.hash),
                Expr::value(g.client_id.clone()),
                Expr::value(g.user_id),
                Expr::value(g.sign_in_session),
                Expr::value(g.redirect_uri.clone()),
                Expr::value(g.code_challenge.clone()),
                Expr::value(g.scope.to_string()),
                Expr::value(g.nonce.clone()),
                Expr::value(g.auth_time),
                Expr::value(new.expires_at),
            ])
            .and_where(Expr::exists(client_exists(&g.client_id)))
            .to_owned();
        let columns = [
            C::CodeHash,
            C::ClientId,
            C::UserId,
            C::SignInSessionId,
            C::RedirectUri,
            C::CodeChallenge,
            C::Scope,
            C::Nonce,
            C::AuthTime,
            C::ExpiresAt,
        ];
        let insert = insert_from(authorization_code::Entity, columns, row)?;
        Ok(self.db.writer().execute(&insert).await?.rows_affected() == 1)
    }

    /// The code with its user, in one query.
    async fn redeem(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<Redeemed>, Error> {
        let Some((row, user)) = authorization_code::Entity::find_by_id(hash.to_vec())
            .find_also_related(user::Entity)
            .unique(self.db.reader())
            .await?
        else {
            return Ok(None);
        };
        if row.used_at.is_some() {
            return Ok(Some(Redeemed::Again {
                session: row.session_id,
            }));
        }
        if row.expires_at <= now {
            return Ok(None);
        }
        Ok(Some(Redeemed::Fresh {
            grant: Box::new(CodeGrant {
                client_id: row.client_id,
                user_id: row.user_id,
                sign_in_session: row.sign_in_session_id,
                redirect_uri: row.redirect_uri,
                code_challenge: row.code_challenge,
                scope: Scope::parse(&row.scope).unwrap_or_default(),
                nonce: row.nonce,
                auth_time: row.auth_time,
            }),
            user: user.map(Into::into),
        }))
    }
}

/// Marks the code used by `session`; the session store runs it where it starts that session. One
/// conditional update, so of concurrent redemptions exactly one claims it.
pub(super) fn claim(hash: &[u8], now: DateTime<Utc>, session: Uuid) -> UpdateStatement {
    use authorization_code::Column as C;
    Query::update()
        .table(authorization_code::Entity)
        .value(C::UsedAt, now)
        .value(C::SessionId, session)
        .cond_where(is_unclaimed(hash))
        .to_owned()
}

/// The code hashed `hash` while no redemption has claimed it.
pub(super) fn unclaimed(hash: &[u8]) -> SelectStatement {
    Query::select()
        .expr(Expr::value(1))
        .from(authorization_code::Entity)
        .cond_where(is_unclaimed(hash))
        .to_owned()
}

fn is_unclaimed(hash: &[u8]) -> Condition {
    use authorization_code::Column as C;
    Condition::all()
        .add(Expr::col(C::CodeHash).eq(hash.to_vec()))
        .add(Expr::col(C::UsedAt).is_null())
}

/// The session the redemption that claimed the code started.
pub(super) async fn claimed_by(
    db: &impl ConnectionTrait,
    hash: &[u8],
) -> Result<Option<Uuid>, DbErr> {
    Ok(authorization_code::Entity::find_by_id(hash.to_vec())
        .unique(db)
        .await?
        .and_then(|row| row.session_id))
}

#[async_trait]
impl ports::SignInSessions for SignInStore {
    /// One `INSERT … SELECT` from the user's row as it was verified: a password change or a disable
    /// either commits first, and nothing is inserted, or comes after and ends this session with the
    /// user's others.
    async fn create(
        &self,
        hash: Vec<u8>,
        user: &User,
        auth_time: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Uuid>, Error> {
        use sign_in_session::Column as S;
        let id = Uuid::new_v4();
        let mut row = Query::select()
            .exprs([
                Expr::value(id),
                Expr::value(hash),
                Expr::value(user.id),
                Expr::value(auth_time),
                Expr::value(expires_at),
            ])
            .to_owned();
        from_user_as_verified(&mut row, user.id, user.password_changed_at);
        let columns = [S::Id, S::TokenHash, S::UserId, S::AuthTime, S::ExpiresAt];
        let insert = insert_from(sign_in_session::Entity, columns, row)?;
        let inserted = self.db.writer().execute(&insert).await?.rows_affected();
        Ok((inserted == 1).then_some(id))
    }

    async fn find(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<SignInSession>, Error> {
        use sign_in_session::Column as S;
        // With its user, in one query: every signed-in authorize asks this.
        let Some((session, user)) = sign_in_session::Entity::find()
            .find_also_related(user::Entity)
            .filter(S::TokenHash.eq(hash.to_vec()))
            .filter(S::RevokedAt.is_null())
            .filter(S::ExpiresAt.gt(now))
            .unique(self.db.reader())
            .await?
        else {
            return Ok(None);
        };
        let user = user.filter(|u| u.is_active && u.password_changed_at <= session.auth_time);
        Ok(user.map(|user| SignInSession {
            id: session.id,
            user: user.into(),
            auth_time: session.auth_time,
        }))
    }
}
