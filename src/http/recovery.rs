//! The pages of account recovery (HTML, not in the OpenAPI document): `GET|POST /password-reset` asks
//! for the address and, reached from a mailed link (`?token=…`), for the new password;
//! `GET|POST /verify-email?token=…` confirms an address. A `GET` never uses a link up: its page's
//! button does, by `POST` with the anti-CSRF token, so mail scanners that open links consume nothing.

use askama::Template;
use poem::{
    Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};

use super::{
    error::{description, status},
    page::{self, Cookies},
    users::{mail_budget, request_reset},
};
use crate::{error::Error, state::AppState};

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetPage<'a> {
    site: &'a str,
    csrf: &'a str,
    /// The link's token: the new-password form; none: the form asking for the address.
    token: Option<&'a str>,
    message: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "verify_email.html")]
struct VerifyPage<'a> {
    site: &'a str,
    csrf: &'a str,
    token: &'a str,
    email: &'a str,
}

#[derive(Template)]
#[template(path = "notice.html")]
struct NoticePage<'a> {
    site: &'a str,
    title: &'a str,
    message: &'a str,
}

/// The fields these pages read.
#[derive(Default)]
struct Fields {
    token: Option<String>,
    email: Option<String>,
    new_password: Option<String>,
    csrf: Option<String>,
}

fn fields(body: &[u8]) -> Result<Fields, ()> {
    let mut fields = Fields::default();
    for (name, value) in page::parameters(body)?.first {
        let slot = match name.as_str() {
            "token" => &mut fields.token,
            "email" => &mut fields.email,
            "new_password" => &mut fields.new_password,
            "csrf" => &mut fields.csrf,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(fields)
}

fn notice(site: &str, status: StatusCode, title: &str, message: &str) -> Response {
    page::html(
        status,
        NoticePage {
            site,
            title,
            message,
        }
        .render(),
    )
}

const LINK_REFUSED: &str =
    "This link is invalid, has expired or was used already. Ask for a new one.";

pub async fn password_reset(state: &AppState, mut req: Request) -> Response {
    let site = page::site(state);
    let body = page::body_or_query(&mut req).await;
    let Ok(fields) = fields(&body) else {
        return page::error(&site, "a parameter is not valid text");
    };
    let cookies = Cookies::of(&req, state);
    let show = |token: Option<&str>, message: Option<&str>, status| {
        let csrf = cookies.csrf();
        let page = ResetPage {
            site: &site,
            csrf: &csrf.value,
            token,
            message,
        };
        let mut resp = page::html(status, page.render());
        csrf.set_on(&mut resp);
        resp
    };
    if req.method() != Method::POST {
        return match fields.token.as_deref() {
            None => show(None, None, StatusCode::OK),
            Some(token) => match state.recovery.reset_link(token).await {
                Ok(_) => show(Some(token), None, StatusCode::OK),
                Err(Error::InvalidLinkToken(_)) => page::error(&site, LINK_REFUSED),
                Err(e) => page::unavailable(&site, e),
            },
        };
    }
    if !cookies.csrf_matches(fields.csrf.as_deref()) {
        return page::forged(&site);
    }
    let Some(token) = fields.token.as_deref() else {
        // The form asking for the address: the same page whatever the address.
        if let Err(Error::RateLimited { retry_after }) = mail_budget(state, &req).await {
            let mut resp = show(
                None,
                Some(&format!(
                    "Too many requests. Try again in {retry_after} seconds."
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return resp;
        }
        let email = fields.email.unwrap_or_default();
        request_reset(state.recovery.clone(), Some(email), None);
        return notice(
            &site,
            StatusCode::OK,
            "Check your mail",
            "If an account has this address, a link to choose a new password is on its way.",
        );
    };
    let new_password = fields.new_password.unwrap_or_default();
    match state.recovery.confirm_reset(token, new_password).await {
        Ok(()) => notice(
            &site,
            StatusCode::OK,
            "Password changed",
            "Your new password is set, and every device signed in before was signed out. Sign in again from your app.",
        ),
        Err(Error::InvalidLinkToken(_)) => page::error(&site, LINK_REFUSED),
        Err(e @ Error::Policy { .. }) => {
            let reason = description(&e).unwrap_or_default();
            show(Some(token), Some(&reason), status(&e))
        }
        Err(e) => page::unavailable(&site, e),
    }
}

pub async fn verify_email(state: &AppState, mut req: Request) -> Response {
    let site = page::site(state);
    let body = page::body_or_query(&mut req).await;
    let Ok(fields) = fields(&body) else {
        return page::error(&site, "a parameter is not valid text");
    };
    let cookies = Cookies::of(&req, state);
    let token = fields.token.unwrap_or_default();
    if req.method() != Method::POST {
        return match state.recovery.verification_link(&token).await {
            Ok(link) => {
                let csrf = cookies.csrf();
                let page = VerifyPage {
                    site: &site,
                    csrf: &csrf.value,
                    token: &token,
                    email: link.email.as_deref().unwrap_or_default(),
                };
                let mut resp = page::html(StatusCode::OK, page.render());
                csrf.set_on(&mut resp);
                resp
            }
            Err(Error::InvalidLinkToken(_)) => page::error(&site, LINK_REFUSED),
            Err(e) => page::unavailable(&site, e),
        };
    }
    if !cookies.csrf_matches(fields.csrf.as_deref()) {
        return page::forged(&site);
    }
    match state.recovery.confirm_verification(&token).await {
        Ok(()) => notice(
            &site,
            StatusCode::OK,
            "Email address confirmed",
            "Thank you: your email address is confirmed.",
        ),
        Err(Error::InvalidLinkToken(_)) => page::error(&site, LINK_REFUSED),
        Err(e) => page::unavailable(&site, e),
    }
}
