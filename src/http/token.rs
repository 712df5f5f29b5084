//! `POST /oauth/token` (RFC 6749 §3.2, §5).

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};
use serde::Deserialize;

use super::{Tag, client_auth, client_ip::client_ip, form::StrictForm};
use crate::{
    error::Error,
    http::error::{Failure, TokenErrors},
    metrics::Metrics,
    oauth::{
        client,
        grant::{GrantRequest, Issued},
        refresh,
    },
    password,
    state::AppState,
    value::{scope::Scope, username},
};

/// A token request. Which parameters apply depends on `grant_type`.
#[derive(Object, Deserialize)]
pub struct TokenForm {
    /// Required: `password`, `refresh_token` or `client_credentials`.
    grant_type: Option<String>,
    /// For `password`.
    username: Option<String>,
    /// For `password`.
    #[oai(write_only)]
    password: Option<String>,
    /// For `refresh_token`.
    #[oai(write_only)]
    refresh_token: Option<String>,
    /// Space-separated scopes; without it, every scope the client may be granted.
    scope: Option<String>,
    /// A public client's id, or a confidential client's with `client_secret` (`client_secret_post`).
    client_id: Option<String>,
    #[oai(write_only)]
    client_secret: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Object)]
pub struct TokenResponse {
    /// An RFC 9068 JWT, signed RS256.
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    #[oai(skip_serializing_if_is_none)]
    refresh_token: Option<String>,
    scope: String,
}

#[derive(Default)]
pub struct TokenApi;

#[OpenApi]
impl TokenApi {
    /// Issue tokens
    ///
    /// Client authentication: HTTP Basic (`client_secret_basic`), `client_id` and `client_secret` in
    /// the body (`client_secret_post`), or a public client's `client_id` alone. A request with no
    /// client at all is taken as the default public client. Every response carries
    /// `Cache-Control: no-store`.
    #[oai(path = "/oauth/token", method = "post", tag = "Tag::OAuth")]
    async fn token(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        form: StrictForm<TokenForm>,
    ) -> Result<Json<TokenResponse>, Failure<TokenErrors>> {
        let mut form = form.0;
        let presented =
            client_auth::presented(req, form.client_id.take(), form.client_secret.take())?;
        let request = grant_request(form)?;
        let ip = client_ip(req, &state.settings.server.trusted_proxies);
        if let GrantRequest::Password { username, .. } = &request {
            state.limits.login(ip, username)?;
        }
        // The password grant writes a session naming the client, so it needs the client's row as it
        // is now. A refresh re-reads its session, which dies with its client (the foreign key
        // cascades), and client_credentials writes nothing: a row read a second ago serves them.
        let lookup = match request {
            GrantRequest::Password { .. } => client::Lookup::Fresh,
            GrantRequest::RefreshToken { .. } | GrantRequest::ClientCredentials { .. } => {
                client::Lookup::Recent
            }
        };
        let client = client_auth::authenticate(&state, presented, lookup).await?;
        let grant_type = request.grant_type();
        let Issued {
            access,
            refresh_token,
            scope,
        } = state.grants.handle(&client, request, ip).await?;
        Metrics::count(&state.metrics.tokens_issued, grant_type.as_str());
        let span = tracing::Span::current();
        span.record("jti", access.claims.jti.as_str());
        if let Some(sid) = &access.claims.sid {
            span.record("sid", sid.as_str());
        }
        Ok(Json(TokenResponse {
            access_token: access.token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            refresh_token,
            scope: scope.to_string(),
        }))
    }
}

fn grant_request(form: TokenForm) -> Result<GrantRequest, Error> {
    let grant_type = need(form.grant_type, "grant_type")?;
    let scope = form.scope.as_deref().map(Scope::parse).transpose()?;
    match grant_type.as_str() {
        "password" => {
            let username = need(form.username, "username")?;
            let password = need(form.password, "password")?;
            // Nothing longer can exist, so refusing it early reveals nothing and spares argon2.
            if username.len() > username::MAX_LENGTH {
                return Err(Error::invalid_request("username is too long"));
            }
            if password.chars().count() > password::MAX_LENGTH {
                return Err(Error::invalid_request("password is too long"));
            }
            Ok(GrantRequest::Password {
                username,
                password,
                scope,
            })
        }
        "refresh_token" => {
            let token = need(form.refresh_token, "refresh_token")?;
            // No refresh token is that long: it is simply not one of ours.
            if token.len() > refresh::MAX_LENGTH {
                return Err(Error::InvalidGrant("refresh token too long"));
            }
            Ok(GrantRequest::RefreshToken { token, scope })
        }
        "client_credentials" => Ok(GrantRequest::ClientCredentials { scope }),
        _ => Err(Error::UnsupportedGrantType),
    }
}

fn need(value: Option<String>, name: &str) -> Result<String, Error> {
    value.ok_or_else(|| Error::invalid_request(format!("missing parameter: {name}")))
}
