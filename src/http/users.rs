//! `POST /users` (registration) and `GET /users/me`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde::Deserialize;
use uuid::Uuid;

use super::{Tag, bearer::Auth, client_ip::client_ip, json::StrictJson};
use crate::{
    accounts::NewAccount,
    error::Error,
    http::error::{BearerErrors, Failure, RegisterErrors},
    state::AppState,
    value::account::User,
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

impl From<User> for UserView {
    fn from(u: User) -> Self {
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
        let created = state
            .accounts
            .register(NewAccount {
                username: &username,
                password,
                email: email.as_deref(),
                is_admin: false,
            })
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
        let user = state.accounts.user_for(auth.claims()).await?;
        Ok(Json(user.into()))
    }
}
