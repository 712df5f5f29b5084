//! `POST /users` (registration) and `GET /users/me`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde::Deserialize;
use uuid::Uuid;

use super::{Tag, bearer::Auth, client_ip::client_ip, json::StrictJson};
use crate::{
    accounts::{self, NewAccount},
    entity::user,
    error::{BearerErrors, Error, Failure, RegisterErrors},
    state::AppState,
    value::claims::AccessClaims,
};

#[derive(Object, Deserialize)]
pub struct RegisterRequest {
    /// 3 to 64 of `A-Z a-z 0-9 . _ -`; unique regardless of case.
    username: String,
    /// 8 to 128 characters (the minimum is configurable), not a common password, not the username.
    #[oai(write_only)]
    password: String,
    email: Option<String>,
}

/// A user as the API shows one.
#[derive(Object)]
pub struct UserView {
    id: Uuid,
    username: String,
    /// `null` when the user has none.
    #[oai(nullable)]
    email: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(u: user::Model) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            created_at: u.created_at,
        }
    }
}

#[derive(ApiResponse)]
enum Registered {
    /// The user was created.
    #[oai(status = 201)]
    Created(Json<UserView>),
}

#[derive(Default)]
pub struct UsersApi;

#[OpenApi]
impl UsersApi {
    /// Register a user
    #[oai(path = "/users", method = "post", tag = "Tag::Users")]
    async fn register(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        body: StrictJson<RegisterRequest>,
    ) -> Result<Registered, Failure<RegisterErrors>> {
        if !state.settings.registration.enabled {
            return Err(Error::RegistrationDisabled.into());
        }
        state
            .limits
            .register(client_ip(req, &state.settings.server.trusted_proxies))?;
        let RegisterRequest {
            username,
            password,
            email,
        } = body.0;
        let created = accounts::register(
            &state.users,
            &state.hasher,
            state.settings.password.min_length,
            NewAccount {
                username: &username,
                password,
                email: email.as_deref(),
                is_admin: false,
            },
        )
        .await?;
        Ok(Registered::Created(Json(created.into())))
    }

    /// The caller
    #[oai(path = "/users/me", method = "get", tag = "Tag::Users")]
    async fn me(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> Result<Json<UserView>, Failure<BearerErrors>> {
        let user = current_user(&state, auth.claims()).await?;
        Ok(Json(user.into()))
    }
}

/// The live user a token speaks for. A client's own token (no user) lacks the scope of a user route.
pub async fn current_user(state: &AppState, claims: &AccessClaims) -> Result<user::Model, Error> {
    if claims.username.is_none() {
        return Err(Error::InsufficientScope);
    }
    let id: Uuid = claims
        .sub
        .parse()
        .map_err(|_| Error::InvalidToken("sub is not a user id"))?;
    match state.users.find(id).await? {
        Some(user) if user.is_active => Ok(user),
        _ => Err(Error::InvalidToken("user is gone or disabled")),
    }
}
