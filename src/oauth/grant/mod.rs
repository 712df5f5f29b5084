//! The token endpoint's grants (RFC 6749 §4–6), one module per `grant_type` value. The edge parses a
//! [`GrantRequest`] and authenticates the client; [`handle`] checks the client may use the grant and
//! runs it.

use std::net::IpAddr;

pub mod client_credentials;
pub mod password;
pub mod refresh_token;

use super::{client::AuthenticatedClient, issuer::AccessToken};
use crate::{
    error::Error,
    state::AppState,
    value::{grant_type::GrantType, scope::Scope},
};

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
}

impl GrantRequest {
    pub fn grant_type(&self) -> GrantType {
        match self {
            Self::Password { .. } => GrantType::Password,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
            Self::ClientCredentials { .. } => GrantType::ClientCredentials,
        }
    }
}

/// What a successful grant issued.
pub struct Issued {
    pub access: AccessToken,
    pub refresh_token: Option<String>,
    pub scope: Scope,
}

/// Runs a grant for `client`; `ip` is the client's address, for failure throttling.
pub async fn handle(
    state: &AppState,
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
        } => password::handle(state, client, &username, password, scope, ip).await,
        GrantRequest::RefreshToken { token, scope } => {
            refresh_token::handle(state, client, &token, scope).await
        }
        GrantRequest::ClientCredentials { scope } => {
            client_credentials::handle(state, client, scope).await
        }
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
