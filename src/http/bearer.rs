//! Bearer authentication (RFC 6750) as poem-openapi security schemes. Two schemes carry the same check:
//! `OAuth2` (the password flow, so Swagger UI's Authorize button logs in) and plain `Bearer`.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{OAuthScopes, SecurityScheme, auth::Bearer};

use crate::{oauth::claims::AccessClaims, state::AppState};

/// The scopes the default client offers, as Swagger UI lists them.
#[derive(OAuthScopes)]
#[allow(dead_code)] // only the OpenAPI document reads these
pub enum Scopes {
    /// Read and manage your own account and sessions.
    #[oai(rename = "profile")]
    Profile,
    /// Administer users (granted to admin users only).
    #[oai(rename = "admin")]
    Admin,
}

#[derive(SecurityScheme)]
#[oai(
    rename = "OAuth2",
    ty = "oauth2",
    flows(password(token_url = "/oauth/token", scopes = "Scopes")),
    checker = "check"
)]
pub struct OAuth2(AccessClaims);

#[derive(SecurityScheme)]
#[oai(
    rename = "Bearer",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check"
)]
pub struct BearerJwt(AccessClaims);

/// A verified access token, from either scheme.
#[derive(SecurityScheme)]
pub enum Auth {
    OAuth2(OAuth2),
    Bearer(BearerJwt),
}

impl Auth {
    pub fn claims(&self) -> &AccessClaims {
        match self {
            Self::OAuth2(OAuth2(c)) | Self::Bearer(BearerJwt(c)) => c,
        }
    }
}

async fn check(req: &Request, bearer: Bearer) -> poem::Result<AccessClaims> {
    let state = req
        .data::<Arc<AppState>>()
        .expect("the app state is attached to every route");
    let claims = state.verifier.check(&bearer.token).await?;
    let span = tracing::Span::current();
    span.record("client_id", claims.client_id.as_str());
    span.record("jti", claims.jti.as_str());
    if let Some(sid) = &claims.sid {
        span.record("sid", sid.as_str());
    }
    Ok(claims)
}
