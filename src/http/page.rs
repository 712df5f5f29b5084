//! What every server-rendered page shares: rendering with the page headers, the `400` and `503` pages,
//! the flow's `303`, the request's cookies, the sign-in session's cookie, and the anti-CSRF token (a
//! double-submit cookie: the form carries the value of a `SameSite=Strict` cookie, which another site
//! can neither read nor send).

use std::borrow::Cow;

use askama::Template;
use poem::{
    Request, Response,
    http::{HeaderValue, StatusCode, header},
};
use subtle::ConstantTimeEq;

use crate::{
    error::Error,
    oauth::{authorize::AuthorizationRequest, logout::LogoutRequest, secret},
    state::AppState,
};

/// The sign-in session's cookie: opaque, stored server-side only as a hash.
pub const SESSION_COOKIE: &str = "portcullis_session";
/// The anti-CSRF cookie, one per browser for every form. Over `https` it carries the `__Host-` prefix,
/// which a browser accepts only from this host, over TLS, for `Path=/`: a sibling subdomain or a
/// plain-HTTP attacker cannot plant one of their own.
const CSRF_COOKIE: &str = "portcullis_csrf";
const CSRF_COOKIE_HOST: &str = "__Host-portcullis_csrf";

/// Pages load nothing and may be framed by no one.
pub const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    site: &'a str,
    message: &'a str,
}

/// A rendered page with the headers every page carries; a page that fails to render says so plainly.
pub fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
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

/// The `400` page: the request cannot be answered, and nothing redirects anywhere.
pub fn error(site: &str, message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        ErrorPage { site, message }.render(),
    )
}

/// The `403` page for a form posted without this browser's anti-CSRF token.
pub fn forged(site: &str) -> Response {
    tracing::warn!("a form without a valid anti-CSRF token");
    let mut resp = error(site, "This form has expired. Go back and try again.");
    resp.set_status(StatusCode::FORBIDDEN);
    resp
}

/// The `503` page when storage cannot answer.
pub fn unavailable(site: &str, e: Error) -> Response {
    tracing::warn!(error = %e, "a page is unavailable");
    let mut resp = html(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorPage {
            site,
            message: "This is not possible right now. Try again in a moment.",
        }
        .render(),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A `303` to where the flow goes next; not to be cached.
pub fn redirect(location: &str) -> Response {
    let mut resp = Response::builder().status(StatusCode::SEE_OTHER).finish();
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// The name the pages go by: the issuer's host.
pub fn site(state: &AppState) -> String {
    state
        .settings
        .server
        .issuer
        .host_str()
        .unwrap_or("Portcullis")
        .to_owned()
}

/// A form body's or a query's parameters: each one's first value, and the names of those that came more
/// than once.
#[derive(Default)]
pub struct Parameters {
    pub first: Vec<(String, String)>,
    pub repeated: Vec<String>,
}

/// The parameters of a form body or a query. `Err` for text that is not UTF-8 or holds a NUL.
pub fn parameters(body: &[u8]) -> Result<Parameters, ()> {
    let mut parameters = Parameters::default();
    for (name, value) in url::form_urlencoded::parse(body) {
        if name.contains('\0') || value.contains('\0') || value.contains('\u{FFFD}') {
            return Err(());
        }
        if parameters.first.iter().any(|(n, _)| *n == name) {
            parameters.repeated.push(name.into_owned());
        } else {
            parameters
                .first
                .push((name.into_owned(), Cow::into_owned(value)));
        }
    }
    Ok(parameters)
}

/// A request a page reads from its parameters: where each parameter it knows goes, and the names of those
/// that came more than once.
pub trait Slots: Default {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>>;
    fn set_repeated(&mut self, names: Vec<String>);
}

impl Slots for AuthorizationRequest {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        AuthorizationRequest::slot(self, name)
    }

    fn set_repeated(&mut self, names: Vec<String>) {
        self.repeated = names;
    }
}

impl Slots for LogoutRequest {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        LogoutRequest::slot(self, name)
    }

    fn set_repeated(&mut self, names: Vec<String>) {
        self.repeated = names;
    }
}

/// The request `R` and the page's own form fields named in `fields`, each parameter at its first value.
/// A repeated parameter that either knows is named in the request's `repeated`; one neither knows is
/// ignored, however often it comes (RFC 6749 §3.1). `Err` for text that is not UTF-8 or holds a NUL.
pub fn request_and_fields<R: Slots, const N: usize>(
    body: &[u8],
    fields: [&str; N],
) -> Result<(R, [Option<String>; N]), ()> {
    let Parameters {
        first,
        mut repeated,
    } = parameters(body)?;
    let mut request = R::default();
    repeated.retain(|name| fields.contains(&name.as_str()) || request.slot(name).is_some());
    request.set_repeated(repeated);
    let mut values = [const { None }; N];
    for (name, value) in first {
        if let Some(i) = fields.iter().position(|field| *field == name) {
            values[i] = Some(value);
        } else if let Some(slot) = request.slot(&name) {
            *slot = Some(value);
        }
    }
    Ok((request, values))
}

/// The form body of a `POST`, or the query of any other request.
pub async fn body_or_query(req: &mut Request) -> bytes::Bytes {
    if req.method() == poem::http::Method::POST {
        req.take_body().into_bytes().await.unwrap_or_default()
    } else {
        bytes::Bytes::copy_from_slice(req.uri().query().unwrap_or_default().as_bytes())
    }
}

/// The request's cookies, by name.
pub struct Cookies<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    /// The issuer is `https`.
    secure: bool,
}

impl<'a> Cookies<'a> {
    pub fn of(req: &'a Request, state: &AppState) -> Self {
        Self {
            pairs: req
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .collect(),
            secure: !secure(state).is_empty(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn csrf_name(&self) -> &'static str {
        if self.secure {
            CSRF_COOKIE_HOST
        } else {
            CSRF_COOKIE
        }
    }

    /// The browser's sign-in session cookie, if it sent one.
    pub fn session(&self) -> Option<&'a str> {
        self.get(SESSION_COOKIE)
    }

    /// Whether a form's anti-CSRF value is this browser's, compared in constant time.
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        let presented = presented.unwrap_or_default();
        self.get(self.csrf_name())
            .is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(presented.as_bytes())))
    }

    /// The anti-CSRF value a form carries: the browser's own while it has one of ours, else a new one,
    /// which [`Csrf::set_on`] gives the browser with the page.
    pub fn csrf(&self) -> Csrf {
        let existing = self.get(self.csrf_name()).filter(|c| {
            c.len() == secret::LENGTH
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        match existing {
            Some(value) => Csrf {
                value: value.to_owned(),
                new: false,
                secure: self.secure,
            },
            None => Csrf {
                value: secret::generate(),
                new: true,
                secure: self.secure,
            },
        }
    }
}

/// A form's anti-CSRF value.
pub struct Csrf {
    pub value: String,
    new: bool,
    secure: bool,
}

impl Csrf {
    /// Gives the browser the cookie when the value is new. `Path=/`: every form of the server checks it.
    pub fn set_on(&self, resp: &mut Response) {
        if self.new {
            let cookie = if self.secure {
                format!(
                    "{CSRF_COOKIE_HOST}={}; Path=/; HttpOnly; SameSite=Strict; Secure",
                    self.value
                )
            } else {
                format!(
                    "{CSRF_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                    self.value
                )
            };
            set_cookie(resp, &cookie);
        }
    }
}

/// Gives the browser the sign-in session's cookie, for `ttl` seconds.
pub fn set_session(state: &AppState, resp: &mut Response, value: &str) {
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        state.settings.login.session_ttl,
        secure(state)
    );
    set_cookie(resp, &cookie);
}

/// Removes the sign-in session's cookie from the browser.
pub fn clear_session(state: &AppState, resp: &mut Response) {
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure(state)
    );
    set_cookie(resp, &cookie);
}

/// Cookies of an `https` issuer travel only over TLS.
fn secure(state: &AppState) -> &'static str {
    if state.settings.server.issuer.scheme() == "https" {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(resp: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_its_request_and_fields_at_their_first_values_and_names_what_repeats() {
        let body =
            b"client_id=app&username=alice&username=mallory&state=a&state=b&utm=1&utm=2&csrf=t";
        let (request, [username, csrf, email]) =
            request_and_fields::<AuthorizationRequest, 3>(body, ["username", "csrf", "email"])
                .unwrap();
        assert_eq!(request.client_id.as_deref(), Some("app"));
        assert_eq!(request.state.as_deref(), Some("a"));
        assert_eq!(username.as_deref(), Some("alice"));
        assert_eq!(csrf.as_deref(), Some("t"));
        assert_eq!(email, None);
        // A field of the form and a parameter of the request are named; one neither knows is not.
        assert_eq!(request.repeated, ["username", "state"]);
    }

    #[test]
    fn a_page_refuses_text_with_a_nul_or_that_is_not_utf8() {
        for body in [&b"username=a%00b"[..], b"username=%FF"] {
            assert!(request_and_fields::<LogoutRequest, 1>(body, ["username"]).is_err());
        }
    }
}
