//! `GET|POST /oauth/userinfo` (OpenID Connect Core §5.3): who the access token's user is, by its scope.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{Tag, bearer::Auth};
use crate::{
    error::Error,
    http::error::{BearerErrors, Failure},
    oauth::userinfo::{OPENID_SCOPE, UserClaims},
    state::AppState,
    value::scope::Scope,
};

/// The user's claims: `sub` always, the others by the token's scope and only when they have a value.
#[derive(Object)]
struct UserInfo {
    /// The user id, as in the access token and the ID token.
    sub: String,
    /// With the `profile` scope.
    #[oai(skip_serializing_if_is_none)]
    preferred_username: Option<String>,
    /// With the `email` scope, when the user has one.
    #[oai(skip_serializing_if_is_none)]
    email: Option<String>,
    /// With the `email` scope, when the user has an email.
    #[oai(skip_serializing_if_is_none)]
    email_verified: Option<bool>,
}

#[derive(Default)]
pub struct UserInfoApi;

#[OpenApi]
impl UserInfoApi {
    /// The signed-in user's claims
    ///
    /// The access token's scope must hold `openid` (else `403 insufficient_scope`).
    #[oai(path = "/oauth/userinfo", method = "get", tag = "Tag::OAuth")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> Result<Json<UserInfo>, Failure<BearerErrors>> {
        userinfo(&state, auth).await
    }

    /// The signed-in user's claims (POST)
    #[oai(path = "/oauth/userinfo", method = "post", tag = "Tag::OAuth")]
    async fn post(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> Result<Json<UserInfo>, Failure<BearerErrors>> {
        userinfo(&state, auth).await
    }
}

async fn userinfo(state: &AppState, auth: Auth) -> Result<Json<UserInfo>, Failure<BearerErrors>> {
    let claims = auth.claims();
    if !claims.has_scope(OPENID_SCOPE) {
        return Err(Error::InsufficientScope.into());
    }
    let user = state.accounts.user_for(claims).await?;
    let scope = Scope::parse(&claims.scope).unwrap_or_default();
    let UserClaims {
        sub,
        preferred_username,
        email,
        email_verified,
    } = UserClaims::of(&user, &scope);
    Ok(Json(UserInfo {
        sub,
        preferred_username,
        email,
        email_verified,
    }))
}
