//! The caller's sessions and password: `GET/DELETE /users/me/sessions[/{id}]`, `POST /users/me/password`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Tag,
    bearer::{Auth, RevokingAuth},
    client_ip::client_ip,
    json::StrictJson,
};
use crate::{
    error::Error,
    http::error::{BearerErrors, BearerItemErrors, Failure, PasswordChangeErrors},
    state::AppState,
    value::account::Session,
};

/// One login: a refresh-token family and the access tokens issued in it.
#[derive(Object)]
pub struct SessionView {
    id: Uuid,
    client_id: String,
    created_at: DateTime<Utc>,
    /// The last refresh, to the minute.
    last_used_at: DateTime<Utc>,
    /// The absolute end of the session.
    expires_at: DateTime<Utc>,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        Self {
            id: s.id,
            client_id: s.client_id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
        }
    }
}

#[derive(Object, Deserialize)]
pub struct PasswordChange {
    #[oai(write_only)]
    current_password: String,
    /// Under the same rules as at registration.
    #[oai(write_only)]
    new_password: String,
}

#[derive(ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

#[derive(Default)]
pub struct SessionsApi;

#[OpenApi]
impl SessionsApi {
    /// The caller's live sessions
    #[oai(path = "/users/me/sessions", method = "get", tag = "Tag::Users")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> Result<Json<Vec<SessionView>>, Failure<BearerErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        let sessions = state.sessions.list_live(user.id, state.clock.now()).await?;
        Ok(Json(sessions.into_iter().map(Into::into).collect()))
    }

    /// Log one session out
    ///
    /// Its refresh token stops working at once, and so do the access tokens issued in it.
    #[oai(path = "/users/me/sessions/:id", method = "delete", tag = "Tag::Users")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        auth: RevokingAuth,
        id: Path<Uuid>,
    ) -> Result<Done, Failure<BearerItemErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        match state.sessions.find(id.0).await? {
            Some(session) if session.user_id == user.id => {
                state.revoker.session(session.id, "logout").await?;
                Ok(Done::NoContent)
            }
            _ => Err(Error::NotFound.into()),
        }
    }

    /// Log out everywhere
    ///
    /// Every session of the caller ends, and every access token issued to them so far is denied.
    #[oai(path = "/users/me/sessions", method = "delete", tag = "Tag::Users")]
    async fn logout_everywhere(
        &self,
        state: Data<&Arc<AppState>>,
        auth: RevokingAuth,
    ) -> Result<Done, Failure<BearerErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        state.revoker.user(user.id, "logout_everywhere").await?;
        Ok(Done::NoContent)
    }

    /// Change the caller's password
    ///
    /// Every session and every access token of the user issued before the change is revoked.
    #[oai(path = "/users/me/password", method = "post", tag = "Tag::Users")]
    async fn change_password(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: RevokingAuth,
        body: StrictJson<PasswordChange>,
    ) -> Result<Done, Failure<PasswordChangeErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        let PasswordChange {
            current_password,
            new_password,
        } = body.0;
        // The same per-address and per-username limits as a login.
        let ip = client_ip(req, &state.settings.server.trusted_proxies);
        state.limits.login(ip, &user.username)?;
        state
            .accounts
            .change_password(&user, current_password, new_password, ip)
            .await?;
        Ok(Done::NoContent)
    }
}
