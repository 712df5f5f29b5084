//! `GET|POST /signup`: the sign-up page linked from the sign-in page when registration is open (HTML, not
//! in the OpenAPI document). Registration itself is [`crate::accounts::Accounts::register`], as for
//! `POST /users`, with its answers; a new account is signed in and the authorization it came from goes on.

use std::net::IpAddr;

use askama::Template;
use poem::{
    Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};

use super::{
    authorize::{carried, continue_signed_in, refusal},
    client_ip::client_ip,
    error::{description, status},
    page::{self, Cookies},
};
use crate::{
    accounts::NewAccount, error::Error, oauth::authorize::AuthorizationRequest, state::AppState,
};

#[derive(Template)]
#[template(path = "signup.html")]
struct SignUpPage<'a> {
    site: &'a str,
    /// The authorization request the browser came with, carried through the form.
    request: Vec<(&'static str, String)>,
    csrf: &'a str,
    username: &'a str,
    email: &'a str,
    message: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "check_mail.html")]
struct CheckMailPage<'a> {
    site: &'a str,
    email: &'a str,
}

#[derive(Template)]
#[template(path = "signed_up.html")]
struct SignedUpPage<'a> {
    site: &'a str,
    username: &'a str,
}

/// What the form adds to the authorization request.
#[derive(Default)]
struct Fields {
    username: Option<String>,
    password: Option<String>,
    email: Option<String>,
    csrf: Option<String>,
}

pub async fn answer(state: &AppState, mut req: Request) -> Response {
    let site = page::site(state);
    if !state.settings.registration.enabled {
        let mut resp = page::error(&site, "Registration is closed.");
        resp.set_status(StatusCode::NOT_FOUND);
        return resp;
    }
    let body = page::body_or_query(&mut req).await;
    let Ok((request, fields)) = parameters(&body) else {
        return page::error(&site, "a parameter is not valid text");
    };
    let cookies = Cookies::of(&req, state);
    let form = SignUpForm {
        site: &site,
        request: &request,
        cookies: &cookies,
    };
    if req.method() != Method::POST {
        return form.show("", "", None, StatusCode::OK);
    }
    if !cookies.csrf_matches(fields.csrf.as_deref()) {
        return page::forged(&site);
    }
    // The authorization the browser came with is checked before anything is created, so that a
    // request that cannot go on leaves no account behind.
    let authorization = match request.client_id {
        None => None,
        Some(_) => match state.authorizer.check(request.clone()).await {
            Ok(authorization) => Some(authorization),
            Err(refused) => return refusal(&site, refused),
        },
    };
    let username = fields.username.unwrap_or_default();
    let email = fields.email.unwrap_or_default();
    let ip: IpAddr = client_ip(&req, &state.settings.server.trusted_proxies);
    let registered = match state.limits.register(ip) {
        Err(e) => Err(e),
        Ok(()) => {
            state
                .accounts
                .register(NewAccount {
                    username: &username,
                    password: fields.password.unwrap_or_default(),
                    email: Some(&email),
                    email_verified: false,
                    is_admin: false,
                })
                .await
        }
    };
    let user = match registered {
        Ok(user) => user,
        Err(e @ (Error::Unavailable { .. } | Error::Internal(_))) => {
            return page::unavailable(&site, e);
        }
        Err(e) => {
            let message = match &e {
                Error::Conflict("email_taken") => "That email address is already in use.".into(),
                Error::Conflict(_) => "That username is taken.".into(),
                Error::RateLimited { retry_after } => {
                    format!("Too many sign-ups. Try again in {retry_after} seconds.")
                }
                other => description(other).map(Into::into).unwrap_or_default(),
            };
            let mut resp = form.show(&username, &email, Some(&message), status(&e));
            if let Error::RateLimited { retry_after } = e {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            return resp;
        }
    };
    tracing::info!(user = %user.id, "signed up on the sign-up page");
    state.recovery.welcome(&user).await;
    if state.settings.registration.require_verified_email {
        let page = CheckMailPage {
            site: &site,
            email: &email,
        };
        return page::html(StatusCode::OK, page.render());
    }
    let (cookie, session) = match state.authorizer.sign_in(&user).await {
        Ok(signed_in) => signed_in,
        // Disabled, or its password changed, in the moment since it was created: trying again won't do.
        Err(Error::InvalidGrant(_)) => {
            return page::error(
                &site,
                "The account changed as it was signed in: sign in again.",
            );
        }
        Err(e) => return page::unavailable(&site, e),
    };
    let Some(authorization) = authorization else {
        // Not on the way to an app: signed in here, and told so.
        let page = SignedUpPage {
            site: &site,
            username: &user.username,
        };
        let mut resp = page::html(StatusCode::OK, page.render());
        page::set_session(state, &mut resp, &cookie);
        return resp;
    };
    continue_signed_in(state, &site, &authorization, (cookie, session)).await
}

/// The sign-up page, carrying the authorization request.
struct SignUpForm<'a> {
    site: &'a str,
    request: &'a AuthorizationRequest,
    cookies: &'a Cookies<'a>,
}

impl SignUpForm<'_> {
    fn show(
        &self,
        username: &str,
        email: &str,
        message: Option<&str>,
        status: StatusCode,
    ) -> Response {
        let csrf = self.cookies.csrf();
        let page = SignUpPage {
            site: self.site,
            request: carried(self.request),
            csrf: &csrf.value,
            username,
            email,
            message,
        };
        let mut resp = page::html(status, page.render());
        csrf.set_on(&mut resp);
        resp
    }
}

/// The authorization request and the form's fields. `Err` for text that is not UTF-8 or holds a NUL.
fn parameters(body: &[u8]) -> Result<(AuthorizationRequest, Fields), ()> {
    let (request, [username, password, email, csrf]) =
        page::request_and_fields(body, ["username", "password", "email", "csrf"])?;
    Ok((
        request,
        Fields {
            username,
            password,
            email,
            csrf,
        },
    ))
}
