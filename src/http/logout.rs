//! `GET|POST /oauth/logout`: RP-initiated logout (the `end_session_endpoint`), with its confirmation and
//! signed-out pages (HTML, not in the OpenAPI document). The rules are [`crate::oauth::logout`]'s.

use askama::Template;
use poem::{
    Request, Response,
    http::{Method, StatusCode},
};

use super::page::{self, Cookies};
use crate::{
    oauth::logout::{LogoutRequest, Refused},
    state::AppState,
};

#[derive(Template)]
#[template(path = "logout.html")]
struct ConfirmPage<'a> {
    site: &'a str,
    username: &'a str,
    /// The logout request, carried through the form.
    request: Vec<(&'static str, String)>,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage<'a> {
    site: &'a str,
}

pub async fn answer(state: &AppState, mut req: Request) -> Response {
    let site = page::site(state);
    let body = page::body_or_query(&mut req).await;
    let Ok((request, confirmation)) = parameters(&body) else {
        return page::error(&site, "a parameter is not valid text");
    };
    let cookies = Cookies::of(&req, state);
    // The confirmation page's button posts back with the anti-CSRF token; a relying party's own `POST`
    // carries neither field.
    let confirmed = req.method() == Method::POST && confirmation.is_some();
    if confirmed && !cookies.csrf_matches(confirmation.as_deref()) {
        return page::forged(&site);
    }
    let session = match state.authorizer.session(cookies.session()).await {
        Ok(s) => s,
        Err(e) => return page::unavailable(&site, e),
    };
    let logout = match state.sign_out.check(&request, session.as_ref()).await {
        Ok(logout) => logout,
        Err(Refused::Page(message)) => return page::error(&site, message),
        Err(Refused::Failed(e)) => return page::unavailable(&site, e),
    };
    if let Some(session) = session.as_ref().filter(|_| !(logout.at_once || confirmed)) {
        let csrf = cookies.csrf();
        let page = ConfirmPage {
            site: &site,
            username: &session.user.username,
            request: carried(&request),
            csrf: &csrf.value,
        };
        let mut resp = page::html(StatusCode::OK, page.render());
        csrf.set_on(&mut resp);
        return resp;
    }
    if let Some(session) = &session
        && let Err(e) = state.sign_out.end(session).await
    {
        return page::unavailable(&site, e);
    }
    let mut resp = match &logout.then {
        Some(location) => page::redirect(location),
        None => page::html(StatusCode::OK, SignedOutPage { site: &site }.render()),
    };
    page::clear_session(state, &mut resp);
    resp
}

/// The parameters of the logout request that the confirmation form carries on.
fn carried(request: &LogoutRequest) -> Vec<(&'static str, String)> {
    [
        ("id_token_hint", &request.id_token_hint),
        ("client_id", &request.client_id),
        (
            "post_logout_redirect_uri",
            &request.post_logout_redirect_uri,
        ),
        ("state", &request.state),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value.clone()?)))
    .collect()
}

/// The logout request, and the anti-CSRF token when the confirmation form posted it (`Some("")` for a
/// confirmation without one). `Err` for text that is not UTF-8 or holds a NUL.
fn parameters(body: &[u8]) -> Result<(LogoutRequest, Option<String>), ()> {
    let (request, [csrf, confirm]) = page::request_and_fields(body, ["csrf", "confirm"])?;
    Ok((request, csrf.or(confirm.map(|_| String::new()))))
}
