//! `/admin/users`: list, disable and enable users. Needs the `admin` scope.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{
    Tag,
    bearer::{Auth, RevokingAuth},
    sessions::Done,
};
use crate::{
    error::Error,
    http::error::{BearerItemErrors, BearerQueryErrors, Failure},
    state::AppState,
    value::{account::User, claims::AccessClaims},
};

/// A user as an administrator sees one.
#[derive(Object)]
pub struct AdminUserView {
    id: Uuid,
    username: String,
    /// `null` when the user has none.
    #[oai(nullable)]
    email: Option<String>,
    /// Whether a mailed link proved the address; `false` without one.
    email_verified: bool,
    is_active: bool,
    is_admin: bool,
    created_at: DateTime<Utc>,
}

impl From<User> for AdminUserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            email_verified: u.email_verified,
            is_active: u.is_active,
            is_admin: u.is_admin,
            created_at: u.created_at,
        }
    }
}

const MAX_PAGE: u64 = 1000;

#[derive(Default)]
pub struct AdminApi;

#[OpenApi]
impl AdminApi {
    /// List users
    #[oai(path = "/admin/users", method = "get", tag = "Tag::Admin")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        /// At most 1000; 100 by default.
        #[oai(default = "default_limit")]
        limit: Query<u64>,
        /// Users to skip, 0 to 2^63 − 1 (what the databases' `OFFSET` holds); 0 by default.
        #[oai(default, validator(minimum(value = "0")))]
        offset: Query<i64>,
    ) -> Result<Json<Vec<AdminUserView>>, Failure<BearerQueryErrors>> {
        state.accounts.admin_for(auth.claims()).await?;
        if limit.0 == 0 || limit.0 > MAX_PAGE {
            return Err(Error::invalid_request("limit must be between 1 and 1000").into());
        }
        let offset = offset.0.unsigned_abs();
        let users = state.users.list(Some(limit.0), offset).await?;
        Ok(Json(users.into_iter().map(Into::into).collect()))
    }

    /// Disable a user
    ///
    /// The user can no longer log in or refresh; every session and access token of theirs is revoked.
    #[oai(path = "/admin/users/:id/disable", method = "post", tag = "Tag::Admin")]
    async fn disable(
        &self,
        state: Data<&Arc<AppState>>,
        auth: RevokingAuth,
        id: Path<Uuid>,
    ) -> Result<Done, Failure<BearerItemErrors>> {
        set_active(&state, auth.claims(), id.0, false).await
    }

    /// Enable a user
    #[oai(path = "/admin/users/:id/enable", method = "post", tag = "Tag::Admin")]
    async fn enable(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> Result<Done, Failure<BearerItemErrors>> {
        set_active(&state, auth.claims(), id.0, true).await
    }
}

async fn set_active(
    state: &AppState,
    claims: &AccessClaims,
    id: Uuid,
    active: bool,
) -> Result<Done, Failure<BearerItemErrors>> {
    state.accounts.admin_for(claims).await?;
    if !state.accounts.set_active(id, active).await? {
        return Err(Error::NotFound.into());
    }
    tracing::info!(user = %id, by = %claims.sub, active, "user state changed");
    Ok(Done::NoContent)
}

fn default_limit() -> u64 {
    100
}
