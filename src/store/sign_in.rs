//! Authorization codes and browser sign-in sessions, as [`ports::Codes`] and [`ports::SignInSessions`]. A
//! code is claimed by the session store, in the statement or transaction that starts its session
//! ([`claim`]); [`ports::Codes::redeem`] only reads it, to say why a redemption started nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, Query, UpdateStatement},
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
            grant: Box::new(grant_of(row)),
            user: user.map(Into::into),
        }))
    }
}

/// Marks the code hashed `hash` used by `session`, only while it is unused and unexpired at `now` and
/// was issued to `client_id`, with `redirect_uri` if it named one, and with `code_challenge`. The
/// session store adds the conditions on its user and runs it where it starts that session. One
/// conditional update, so of concurrent redemptions exactly one claims it. The database compares the
/// challenge, not in constant time: it is public (it came in the authorization request's URL), and the
/// verifier it was computed from never leaves this process.
pub(super) fn claim(
    hash: &[u8],
    now: DateTime<Utc>,
    session: Uuid,
    client_id: &str,
    redirect_uri: Option<&str>,
    code_challenge: &str,
) -> UpdateStatement {
    use authorization_code::Column as C;
    let issued_without_one = Expr::col(C::RedirectUri).is_null();
    Query::update()
        .table(authorization_code::Entity)
        .value(C::UsedAt, now)
        .value(C::SessionId, session)
        .and_where(Expr::col(C::CodeHash).eq(hash.to_vec()))
        .and_where(Expr::col(C::UsedAt).is_null())
        .and_where(Expr::col(C::ExpiresAt).gt(now))
        .and_where(Expr::col(C::ClientId).eq(client_id))
        .and_where(Expr::col(C::CodeChallenge).eq(code_challenge))
        .and_where(match redirect_uri {
            Some(uri) => issued_without_one.or(Expr::col(C::RedirectUri).eq(uri)),
            None => issued_without_one,
        })
        .to_owned()
}

/// What a code's row stands for.
pub(super) fn grant_of(row: authorization_code::Model) -> CodeGrant {
    CodeGrant {
        client_id: row.client_id,
        user_id: row.user_id,
        sign_in_session: row.sign_in_session_id,
        redirect_uri: row.redirect_uri,
        code_challenge: row.code_challenge,
        scope: Scope::parse(&row.scope).unwrap_or_default(),
        nonce: row.nonce,
        auth_time: row.auth_time,
    }
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
