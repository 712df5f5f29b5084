//! `GET|POST /oauth/authorize`: the authorization endpoint and the sign-in page it serves (HTML that
//! works without JavaScript; not in the OpenAPI document). The rules are [`crate::oauth::authorize`]'s;
//! this reads parameters and cookies, renders pages, and sets the cookies.

use std::net::IpAddr;

use askama::Template;
use poem::{
    Request, Response,
    http::{HeaderValue, StatusCode, header},
};

use super::{
    client_ip::client_ip,
    page::{self, Cookies},
};
use crate::{
    error::Error,
    oauth::authorize::{Authorization, AuthorizationRequest, Refused},
    ports::SignInSession,
    state::AppState,
};

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
    /// The sign-up page, carrying the request, when registration is open.
    signup: Option<String>,
}

/// What the sign-in form adds to the authorization request.
#[derive(Default)]
struct Credentials {
    username: Option<String>,
    password: Option<String>,
    csrf: Option<String>,
}

pub async fn answer(state: &AppState, mut req: Request) -> Response {
    let site = page::site(state);
    let body = page::body_or_query(&mut req).await;
    let Ok((request, credentials)) = parameters(&body) else {
        return page::error(&site, "a parameter is not valid text");
    };
    let authorization = match state.authorizer.check(request.clone()).await {
        Ok(a) => a,
        Err(refused) => return refusal(&site, refused),
    };
    let cookies = Cookies::of(&req, state);
    if req.method() == poem::http::Method::POST && credentials.username.is_some() {
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
    let session = match state.authorizer.session(cookies.session()).await {
        Ok(s) => s,
        Err(e) => return page::unavailable(&site, e),
    };
    match state.authorizer.usable(&authorization, session.as_ref()) {
        Err(refused) => refusal(&site, refused),
        Ok(Some(session)) => match state.authorizer.code(&authorization, session).await {
            Ok(location) => page::redirect(&location),
            Err(refused) => refusal(&site, refused),
        },
        Ok(None) => {
            let username = authorization.login_hint.clone().unwrap_or_default();
            let form = SignInForm {
                site: &site,
                authorization: &authorization,
                request: &request,
                cookies: &cookies,
                signup: state.settings.registration.enabled,
            };
            form.show(&username, None, StatusCode::OK)
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
    if !cookies.csrf_matches(credentials.csrf.as_deref()) {
        return page::forged(site);
    }
    let username = credentials.username.unwrap_or_default();
    let ip: IpAddr = client_ip(req, &state.settings.server.trusted_proxies);
    let password = credentials.password.unwrap_or_default();
    let checked = match state.limits.login(ip, &username) {
        Err(e) => Err(e),
        Ok(()) if username.len() > 64 || password.chars().count() > 128 => {
            Err(Error::InvalidGrant("too long"))
        }
        Ok(()) => {
            match state
                .login
                .password(&username, password, ip, state.clock.now())
                .await
            {
                Ok(user) => state.authorizer.sign_in(&user).await,
                Err(e) => Err(e),
            }
        }
    };
    let form = SignInForm {
        site,
        authorization,
        request,
        cookies,
        signup: state.settings.registration.enabled,
    };
    // A user who changed their password or was disabled while it was checked is refused as any wrong
    // password is.
    let signed_in = match checked {
        Ok(signed_in) => signed_in,
        Err(Error::InvalidGrant(_)) => {
            return form.show(
                &username,
                Some("Wrong username or password."),
                StatusCode::BAD_REQUEST,
            );
        }
        Err(Error::EmailNotVerified) => {
            return form.show(
                &username,
                Some("Confirm your email address first: open the link we sent you."),
                StatusCode::BAD_REQUEST,
            );
        }
        Err(Error::RateLimited { retry_after }) => {
            let mut resp = form.show(
                &username,
                Some(&format!(
                    "Too many attempts. Try again in {retry_after} seconds."
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return resp;
        }
        Err(e) => return page::unavailable(site, e),
    };
    tracing::info!(user = %signed_in.1.user.id, client = %authorization.client.id, "signed in");
    continue_signed_in(state, site, authorization, signed_in).await
}

/// After a password was proven and a sign-in session started (on the sign-in or the sign-up page): its
/// cookie, and the code for the authorization under way.
pub async fn continue_signed_in(
    state: &AppState,
    site: &str,
    authorization: &Authorization,
    (cookie, session): (String, SignInSession),
) -> Response {
    let mut resp = match state.authorizer.code(authorization, &session).await {
        Ok(location) => page::redirect(&location),
        Err(refused) => refusal(site, refused),
    };
    page::set_session(state, &mut resp, &cookie);
    resp
}

/// The sign-in page for one authorization request.
struct SignInForm<'a> {
    site: &'a str,
    authorization: &'a Authorization,
    request: &'a AuthorizationRequest,
    cookies: &'a Cookies<'a>,
    signup: bool,
}

impl SignInForm<'_> {
    fn show(&self, username: &str, message: Option<&str>, status: StatusCode) -> Response {
        let csrf = self.cookies.csrf();
        let request = carried(self.request);
        let signup = self.signup.then(|| {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&request)
                .finish();
            format!("/signup?{query}")
        });
        let page = SignInPage {
            site: self.site,
            client_id: &self.authorization.client.id,
            request,
            csrf: &csrf.value,
            username,
            message: message.map(str::to_owned),
            signup,
        };
        let mut resp = page::html(status, page.render());
        csrf.set_on(&mut resp);
        resp
    }
}

/// The parameters of the authorization request that a form carries on.
pub fn carried(request: &AuthorizationRequest) -> Vec<(&'static str, String)> {
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

pub fn refusal(site: &str, refused: Refused) -> Response {
    match refused {
        Refused::Page(message) => page::error(site, message),
        Refused::Redirect(location) => page::redirect(&location),
        Refused::Failed(e) => page::unavailable(site, e),
    }
}

/// The authorization request and the sign-in form's fields. `Err` for text that is not UTF-8 or holds a
/// NUL.
fn parameters(body: &[u8]) -> Result<(AuthorizationRequest, Credentials), ()> {
    let (request, [username, password, csrf]) =
        page::request_and_fields(body, ["username", "password", "csrf"])?;
    Ok((
        request,
        Credentials {
            username,
            password,
            csrf,
        },
    ))
}
