//! `GET|POST /oauth/authorize`: the authorization endpoint and the sign-in page it serves (HTML that
//! works without JavaScript; not in the OpenAPI document). The rules are [`crate::oauth::authorize`]'s;
//! this reads parameters and cookies, renders pages, and sets the cookies.

use std::{borrow::Cow, net::IpAddr};

use askama::Template;
use poem::{
    Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use subtle::ConstantTimeEq;

use super::client_ip::client_ip;
use crate::{
    error::Error,
    oauth::{
        authorize::{Authorization, AuthorizationRequest, Refused},
        secret,
    },
    state::AppState,
};

/// The sign-in session's cookie: opaque, stored server-side only as a hash.
const SESSION_COOKIE: &str = "portcullis_session";
/// The anti-CSRF cookie; the sign-in form carries the same value, which another site cannot read.
const CSRF_COOKIE: &str = "portcullis_csrf";

/// Pages load nothing and may be framed by no one; the sign-in form posts only here.
pub const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    site: &'a str,
    client_id: &'a str,
    /// The authorization request, carried through the form.
    request: Vec<(&'static str, String)>,
    csrf: &'a str,
    username: &'a str,
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    site: &'a str,
    message: &'a str,
}

/// What the sign-in form adds to the authorization request.
#[derive(Default)]
struct Credentials {
    username: Option<String>,
    password: Option<String>,
    csrf: Option<String>,
}

pub async fn answer(state: &AppState, mut req: Request) -> Response {
    let site = site(state);
    let body = if req.method() == Method::POST {
        req.take_body().into_bytes().await.unwrap_or_default()
    } else {
        bytes::Bytes::copy_from_slice(req.uri().query().unwrap_or_default().as_bytes())
    };
    let Ok((request, credentials)) = parameters(&body) else {
        return page_error(&site, "a parameter is not valid text");
    };
    let authorization = match state.authorizer.check(request.clone()).await {
        Ok(a) => a,
        Err(refused) => return refusal(&site, refused),
    };
    let cookies = Cookies::of(&req);
    if req.method() == Method::POST && credentials.username.is_some() {
        return sign_in(
            state,
            &req,
            &site,
            &authorization,
            &request,
            credentials,
            &cookies,
        )
        .await;
    }
    let session = match state.authorizer.session(cookies.get(SESSION_COOKIE)).await {
        Ok(s) => s,
        Err(e) => return unavailable(&site, e),
    };
    match state.authorizer.usable(&authorization, session.as_ref()) {
        Err(refused) => refusal(&site, refused),
        Ok(Some(session)) => match state.authorizer.code(&authorization, session).await {
            Ok(location) => redirect(&location),
            Err(refused) => refusal(&site, refused),
        },
        Ok(None) => {
            let username = authorization.login_hint.clone().unwrap_or_default();
            sign_in_page(
                &site,
                &authorization,
                &request,
                &cookies,
                &username,
                None,
                StatusCode::OK,
            )
        }
    }
}

/// The sign-in form's submission: the same login protection as the password grant, then a sign-in
/// session and the code.
async fn sign_in(
    state: &AppState,
    req: &Request,
    site: &str,
    authorization: &Authorization,
    request: &AuthorizationRequest,
    credentials: Credentials,
    cookies: &Cookies<'_>,
) -> Response {
    let username = credentials.username.unwrap_or_default();
    let form_csrf = credentials.csrf.unwrap_or_default();
    let tied = cookies
        .get(CSRF_COOKIE)
        .is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(form_csrf.as_bytes())));
    if !tied {
        tracing::warn!("sign-in form without a valid anti-CSRF token");
        let mut resp = page_error(site, "This form has expired. Go back and try again.");
        resp.set_status(StatusCode::FORBIDDEN);
        return resp;
    }
    let ip: IpAddr = client_ip(req, &state.settings.server.trusted_proxies);
    let password = credentials.password.unwrap_or_default();
    let checked = match state.limits.login(ip, &username) {
        Err(e) => Err(e),
        Ok(()) if username.len() > 64 || password.chars().count() > 128 => {
            Err(Error::InvalidGrant("too long"))
        }
        Ok(()) => {
            state
                .login
                .password(&username, password, ip, state.clock.now())
                .await
        }
    };
    let page = |message: &str, status| {
        sign_in_page(
            site,
            authorization,
            request,
            cookies,
            &username,
            Some(message.to_owned()),
            status,
        )
    };
    let user = match checked {
        Ok(user) => user,
        Err(Error::InvalidGrant(_)) => {
            return page("Wrong username or password.", StatusCode::BAD_REQUEST);
        }
        Err(Error::RateLimited { retry_after }) => {
            let mut resp = page(
                &format!("Too many attempts. Try again in {retry_after} seconds."),
                StatusCode::TOO_MANY_REQUESTS,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return resp;
        }
        Err(e) => return unavailable(site, e),
    };
    let (cookie, session) = match state.authorizer.sign_in(&user).await {
        Ok(signed_in) => signed_in,
        Err(e) => return unavailable(site, e),
    };
    tracing::info!(user = %user.id, client = %authorization.client.id, "signed in");
    let mut resp = match state.authorizer.code(authorization, &session).await {
        Ok(location) => redirect(&location),
        Err(refused) => refusal(site, refused),
    };
    let secure = if state.settings.server.issuer.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        state.settings.login.session_ttl
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    resp
}

fn sign_in_page(
    site: &str,
    authorization: &Authorization,
    request: &AuthorizationRequest,
    cookies: &Cookies<'_>,
    username: &str,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    // The browser's anti-CSRF value: kept while it has one of ours, made when it has none.
    let existing = cookies.get(CSRF_COOKIE).filter(|c| {
        c.len() == secret::LENGTH
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let csrf = existing.map_or_else(secret::generate, str::to_owned);
    let page = SignInPage {
        site,
        client_id: &authorization.client.id,
        request: carried(request),
        csrf: &csrf,
        username,
        message,
    };
    let mut resp = html(status, page.render());
    if existing.is_none() {
        let value =
            format!("{CSRF_COOKIE}={csrf}; Path=/oauth/authorize; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    resp
}

/// The parameters of the authorization request that the form posts back.
fn carried(request: &AuthorizationRequest) -> Vec<(&'static str, String)> {
    [
        ("response_type", &request.response_type),
        ("client_id", &request.client_id),
        ("redirect_uri", &request.redirect_uri),
        ("scope", &request.scope),
        ("state", &request.state),
        ("code_challenge", &request.code_challenge),
        ("code_challenge_method", &request.code_challenge_method),
        ("nonce", &request.nonce),
        ("max_age", &request.max_age),
        ("login_hint", &request.login_hint),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value.clone()?)))
    .collect()
}

fn refusal(site: &str, refused: Refused) -> Response {
    match refused {
        Refused::Page(message) => page_error(site, message),
        Refused::Redirect(location) => redirect(&location),
    }
}

fn page_error(site: &str, message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        ErrorPage { site, message }.render(),
    )
}

fn unavailable(site: &str, e: Error) -> Response {
    tracing::warn!(error = %e, "sign-in unavailable");
    let mut resp = html(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorPage {
            site,
            message: "Signing in is not possible right now. Try again in a moment.",
        }
        .render(),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A `303` to where the flow goes next; not to be cached.
fn redirect(location: &str) -> Response {
    let mut resp = Response::builder().status(StatusCode::SEE_OTHER).finish();
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    let body = rendered.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a page did not render");
        "<!doctype html><title>Error</title><p>Something went wrong.".to_owned()
    });
    let mut resp = Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(body);
    super::protect_page(resp.headers_mut(), PAGE_CSP);
    resp
}

/// The name the pages go by: the issuer's host.
fn site(state: &AppState) -> String {
    state
        .settings
        .server
        .issuer
        .host_str()
        .unwrap_or("Portcullis")
        .to_owned()
}

/// The authorization request and the sign-in form's fields, each parameter at most once; a repeated
/// one is named in `repeated`. `Err` for text that is not UTF-8 or holds a NUL.
fn parameters(body: &[u8]) -> Result<(AuthorizationRequest, Credentials), ()> {
    let mut request = AuthorizationRequest::default();
    let mut credentials = Credentials::default();
    for (name, value) in url::form_urlencoded::parse(body) {
        if name.contains('\0') || value.contains('\0') || value.contains('\u{FFFD}') {
            return Err(());
        }
        let slot = match name.as_ref() {
            "response_type" => &mut request.response_type,
            "client_id" => &mut request.client_id,
            "redirect_uri" => &mut request.redirect_uri,
            "scope" => &mut request.scope,
            "state" => &mut request.state,
            "code_challenge" => &mut request.code_challenge,
            "code_challenge_method" => &mut request.code_challenge_method,
            "nonce" => &mut request.nonce,
            "prompt" => &mut request.prompt,
            "max_age" => &mut request.max_age,
            "login_hint" => &mut request.login_hint,
            "username" => &mut credentials.username,
            "password" => &mut credentials.password,
            "csrf" => &mut credentials.csrf,
            _ => continue,
        };
        if slot.is_some() {
            request.repeated.push(name.into_owned());
        } else {
            *slot = Some(Cow::into_owned(value));
        }
    }
    Ok((request, credentials))
}

/// The request's cookies, by name.
struct Cookies<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Cookies<'a> {
    fn of(req: &'a Request) -> Self {
        Self(
            req.headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}
