//! Bearer authentication (RFC 6750) as poem-openapi security schemes. Two schemes carry the same check:
//! `OAuth2` (the password flow, so Swagger UI's Authorize button logs in) and plain `Bearer`.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{OAuthScopes, SecurityScheme, auth::Bearer};

use crate::{state::AppState, value::claims::AccessClaims};

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

/// Two schemes with one checker, and the enum that takes either: `OAuth2` (the password flow, so that
/// Swagger UI's Authorize button logs in) and plain `Bearer`.
macro_rules! bearer_schemes {
    ($(#[$doc:meta])* $either:ident { $oauth2:ident, $bearer:ident } checked by $checker:literal) => {
        #[derive(SecurityScheme)]
        #[oai(
            rename = "OAuth2",
            ty = "oauth2",
            flows(password(token_url = "/oauth/token", scopes = "Scopes")),
            checker = $checker
        )]
        pub struct $oauth2(AccessClaims);

        #[derive(SecurityScheme)]
        #[oai(rename = "Bearer", ty = "bearer", bearer_format = "JWT", checker = $checker)]
        pub struct $bearer(AccessClaims);

        $(#[$doc])*
        #[derive(SecurityScheme)]
        pub enum $either {
            OAuth2($oauth2),
            Bearer($bearer),
        }

        impl $either {
            pub fn claims(&self) -> &AccessClaims {
                match self {
                    Self::OAuth2($oauth2(c)) | Self::Bearer($bearer(c)) => c,
                }
            }
        }
    };
}

bearer_schemes! {
    /// A verified access token that the deny list does not list.
    Auth { OAuth2, BearerJwt } checked by "check"
}

bearer_schemes! {
    /// The same, for the routes that only take access away (logging out, changing the password,
    /// disabling a user): while the deny list cannot be read, the token is checked against the
    /// revocation log in the database instead, so that these are answered as usual during a Redis outage.
    RevokingAuth { RevokingOAuth2, RevokingBearer } checked by "check_durably"
}

async fn check(req: &Request, bearer: Bearer) -> poem::Result<AccessClaims> {
    let state = state(req);
    let claims = state.verifier.check(&bearer.token).await?;
    Ok(traced(claims))
}

async fn check_durably(req: &Request, bearer: Bearer) -> poem::Result<AccessClaims> {
    let state = state(req);
    let claims = state.verifier.check_durably(&bearer.token).await?;
    Ok(traced(claims))
}

fn state(req: &Request) -> &Arc<AppState> {
    req.data::<Arc<AppState>>()
        .expect("the app state is attached to every route")
}

/// Names the token in the request's log line.
fn traced(claims: AccessClaims) -> AccessClaims {
    let span = tracing::Span::current();
    span.record("client_id", claims.client_id.as_str());
    span.record("jti", claims.jti.as_str());
    if let Some(sid) = &claims.sid {
        span.record("sid", sid.as_str());
    }
    claims
}
