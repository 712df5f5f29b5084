//! The token endpoint's grants (RFC 6749 §4–6), one module per `grant_type` value. The edge parses a
//! [`GrantRequest`] and authenticates the client; [`Grants::handle`] checks the client may use the
//! grant and runs it.

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub mod authorization_code;
pub mod client_credentials;
pub mod password;
pub mod refresh_token;

use super::{
    client::AuthenticatedClient,
    issuer::{AccessToken, Issuer, Subject},
    login::LoginGuard,
    refresh::RefreshTokens,
    revocation::Revoker,
    secret,
};
use crate::{
    error::Error,
    metrics::Metrics,
    ports::{Clock, Codes, NewSession, Sessions, later},
    value::{account::User, grant_type::GrantType, scope::Scope},
};

/// How long what a login starts may live.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// A session's absolute lifetime (`refresh.absolute_ttl`).
    pub session: Duration,
    /// A refresh token's idle lifetime (`refresh.idle_ttl`).
    pub refresh_idle: Duration,
    /// How long after a rotation a retry of it gets the same successor (`refresh.reuse_grace`).
    pub reuse_grace: Duration,
}

/// What the grants work with, each part no wider than a grant needs.
pub struct Grants {
    pub sessions: Arc<dyn Sessions>,
    pub codes: Arc<dyn Codes>,
    pub login: Arc<LoginGuard>,
    pub issuer: Arc<Issuer>,
    pub refresh_tokens: RefreshTokens,
    pub revoker: Arc<Revoker>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub lifetimes: Lifetimes,
}

/// A token request after parsing: no optional fields left to check, no grant-type strings.
pub enum GrantRequest {
    Password {
        username: String,
        password: String,
        scope: Option<Scope>,
    },
    RefreshToken {
        token: String,
        scope: Option<Scope>,
    },
    ClientCredentials {
        scope: Option<Scope>,
    },
    AuthorizationCode(authorization_code::CodeRedemption),
}

impl GrantRequest {
    pub fn grant_type(&self) -> GrantType {
        match self {
            Self::Password { .. } => GrantType::Password,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
            Self::ClientCredentials { .. } => GrantType::ClientCredentials,
            Self::AuthorizationCode(_) => GrantType::AuthorizationCode,
        }
    }
}

/// What a successful grant issued.
pub struct Issued {
    pub access: AccessToken,
    pub refresh_token: Option<String>,
    /// With the authorization code grant when the scope holds `openid`.
    pub id_token: Option<String>,
    pub scope: Scope,
}

impl Grants {
    /// Runs a grant for `client`; `ip` is the client's address, for failure throttling.
    pub async fn handle(
        &self,
        client: &AuthenticatedClient,
        request: GrantRequest,
        ip: IpAddr,
    ) -> Result<Issued, Error> {
        if !client.may_use(request.grant_type()) {
            return Err(Error::UnauthorizedClient);
        }
        match request {
            GrantRequest::Password {
                username,
                password,
                scope,
            } => self.password(client, &username, password, scope, ip).await,
            GrantRequest::RefreshToken { token, scope } => {
                self.refresh_token(client, &token, scope).await
            }
            GrantRequest::ClientCredentials { scope } => self.client_credentials(client, scope),
            GrantRequest::AuthorizationCode(presented) => {
                self.authorization_code(client, presented).await
            }
        }
    }
}

/// A login's first tokens: its session, an access token in it, and the refresh token that starts the
/// family when the client may refresh.
struct Started {
    session: Uuid,
    access: AccessToken,
    refresh_token: Option<String>,
}

/// The refresh token a session is to start with, before it starts.
struct FirstRefresh {
    token: Option<String>,
    /// What the store keeps of it: its hash and idle expiry.
    stored: Option<(Vec<u8>, DateTime<Utc>)>,
}

impl Grants {
    /// Starts a session for `user` as they were verified, and issues its first tokens; `None` when the
    /// user changed since (see [`Sessions::start`]).
    async fn start_session(
        &self,
        user: &User,
        client: &AuthenticatedClient,
        scope: &Scope,
        now: DateTime<Utc>,
    ) -> Result<Option<Started>, Error> {
        let refresh = self.first_refresh(client, now);
        let Some(session) = self
            .sessions
            .start(NewSession {
                user,
                client_id: &client.id,
                scope,
                now,
                expires_at: later(now, self.lifetimes.session),
                refresh: refresh.stored,
            })
            .await?
        else {
            return Ok(None);
        };
        let access = self.access_in(user, session.id, client, scope)?;
        Ok(Some(Started {
            session: session.id,
            access,
            refresh_token: refresh.token,
        }))
    }

    /// A refresh token for a session of `client` starting at `now`, when the client may refresh.
    fn first_refresh(&self, client: &AuthenticatedClient, now: DateTime<Utc>) -> FirstRefresh {
        let token = client
            .may_use(GrantType::RefreshToken)
            .then(secret::generate);
        let stored = token
            .as_deref()
            .map(|t| (secret::hash(t), later(now, self.lifetimes.refresh_idle)));
        FirstRefresh { token, stored }
    }

    /// The access token of `user`'s session `session`.
    fn access_in(
        &self,
        user: &User,
        session: Uuid,
        client: &AuthenticatedClient,
        scope: &Scope,
    ) -> Result<AccessToken, Error> {
        self.issuer.access_token(
            Subject::User {
                id: user.id,
                username: &user.username,
                session,
            },
            &client.id,
            scope,
        )
    }
}

/// The scope a grant issues: what was asked for, which must lie within what may be granted, or all of
/// that when nothing was asked for (RFC 6749 §3.3).
pub fn resolve_scope(requested: Option<Scope>, grantable: &Scope) -> Result<Scope, Error> {
    match requested {
        None => Ok(grantable.clone()),
        Some(s) if s.is_subset(grantable) => Ok(s),
        Some(_) => Err(Error::InvalidScope),
    }
}
