//! `POST /users` (registration), `GET` and `PATCH /users/me`, and account recovery by email: password
//! reset and email verification (the JSON half; the pages are [`super::recovery`]'s).

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
    http::error::{
        BearerErrors, EmailChangeErrors, Failure, LinkConfirmErrors, RegisterErrors,
        ResetRequestErrors, VerificationErrors,
    },
    recovery::{Recovery, ResetFor},
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
    /// Whether a mailed link proved the address; `false` without one.
    email_verified: bool,
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            email_verified: u.email_verified,
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
                email_verified: false,
                is_admin: false,
            })
            .await?;
        state.recovery.welcome(&created).await;
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

    /// Ask for a password-reset link
    ///
    /// Mails a link to `{issuer}/password-reset?token=…` when a user with that email or username exists
    /// and has an address. The answer is the same `202`, in the same time, either way.
    #[oai(path = "/users/password-reset", method = "post", tag = "Tag::Users")]
    async fn password_reset(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        body: StrictJson<ResetRequest>,
    ) -> Result<Accepted, Failure<ResetRequestErrors>> {
        let ResetRequest { email, username } = body.0;
        if email.is_none() && username.is_none() {
            return Err(Error::invalid_request("email or username is required").into());
        }
        mail_budget(&state, req).await?;
        request_reset(state.recovery.clone(), email, username);
        Ok(Accepted::now())
    }

    /// Set a new password with a reset link
    ///
    /// Ends every session, sign-in session and access token of the user, and voids their other reset
    /// links. A password the policy refuses is a `422` and leaves the link working.
    #[oai(
        path = "/users/password-reset/confirm",
        method = "post",
        tag = "Tag::Users"
    )]
    async fn password_reset_confirm(
        &self,
        state: Data<&Arc<AppState>>,
        body: StrictJson<ResetConfirm>,
    ) -> Result<NoContent, Failure<LinkConfirmErrors>> {
        let ResetConfirm {
            token,
            new_password,
        } = body.0;
        state.recovery.confirm_reset(&token, new_password).await?;
        Ok(NoContent::Done)
    }

    /// Confirm an email address with a verification link
    #[oai(
        path = "/users/email-verification/confirm",
        method = "post",
        tag = "Tag::Users"
    )]
    async fn email_verification_confirm(
        &self,
        state: Data<&Arc<AppState>>,
        body: StrictJson<VerificationConfirm>,
    ) -> Result<NoContent, Failure<LinkConfirmErrors>> {
        state.recovery.confirm_verification(&body.0.token).await?;
        Ok(NoContent::Done)
    }

    /// Send the verification link again
    #[oai(
        path = "/users/me/email-verification",
        method = "post",
        tag = "Tag::Users"
    )]
    async fn email_verification(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        auth: Auth,
    ) -> Result<Accepted, Failure<VerificationErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        mail_budget(&state, req).await?;
        state.recovery.send_verification(&user).await?;
        Ok(Accepted::now())
    }

    /// Change the caller's email address
    ///
    /// The new address is unverified and receives a verification link; the old one, if any, a notice.
    #[oai(path = "/users/me", method = "patch", tag = "Tag::Users")]
    async fn change_email(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: StrictJson<EmailChange>,
    ) -> Result<Json<UserView>, Failure<EmailChangeErrors>> {
        let user = state.accounts.user_for(auth.claims()).await?;
        let Some(email) = body.0.email else {
            return Err(Error::Policy {
                code: "invalid_email",
                description: "email is required".into(),
            }
            .into());
        };
        let changed = state.recovery.change_email(&user, &email).await?;
        Ok(Json(changed.into()))
    }
}

/// One request that may send mail from the request's client address (`rate_limit.mail_per_ip`).
pub async fn mail_budget(state: &AppState, req: &Request) -> Result<(), Error> {
    let ip = client_ip(req, &state.settings.server.trusted_proxies);
    state
        .mail_limit
        .check(ip, state.clock.now().timestamp())
        .await
}

/// Starts a reset request in the background, so that the answer takes the same time whether or not the
/// user exists (the lookup, the link and the message happen after it).
pub fn request_reset(recovery: Arc<Recovery>, email: Option<String>, username: Option<String>) {
    tokio::spawn(async move {
        let who = match (&email, &username) {
            (Some(email), _) => ResetFor::Email(email),
            (None, Some(username)) => ResetFor::Username(username),
            (None, None) => return,
        };
        if let Err(e) = recovery.request_reset(who).await {
            tracing::warn!(error = %e, "a password-reset request failed");
        }
    });
}

#[derive(Object, Deserialize)]
pub struct ResetRequest {
    /// The account's address, regardless of case.
    email: Option<String>,
    /// Or its username.
    username: Option<String>,
}

#[derive(Object, Deserialize)]
pub struct ResetConfirm {
    /// The `token` of the link.
    #[oai(write_only)]
    token: String,
    #[oai(write_only)]
    new_password: String,
}

#[derive(Object, Deserialize)]
pub struct VerificationConfirm {
    /// The `token` of the link.
    #[oai(write_only)]
    token: String,
}

#[derive(Object, Deserialize)]
pub struct EmailChange {
    /// The new address.
    email: Option<String>,
}

/// The same answer whether or not anything was sent.
#[derive(Object)]
pub struct AcceptedBody {
    /// Always `accepted`.
    status: String,
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Taken; if there is anything to send, it is on its way.
    #[oai(status = 202)]
    Accepted(Json<AcceptedBody>),
}

impl Accepted {
    fn now() -> Self {
        Self::Accepted(Json(AcceptedBody {
            status: "accepted".into(),
        }))
    }
}

#[derive(ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}
