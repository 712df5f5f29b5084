//! The HTTP edge: the only module that knows poem. Handlers parse requests into domain values, call the
//! domain, and turn results into responses; every error is rendered by [`crate::error`].

mod admin;
mod authorize;
mod bearer;
mod client_auth;
mod client_ip;
mod discovery;
pub mod error;
mod feed;
mod form;
mod json;
mod logout;
mod ops;
mod page;
mod recovery;
mod revoke;
mod sessions;
mod signup;
pub(crate) mod timeouts;
mod token;
mod userinfo;
mod users;

use std::sync::{Arc, LazyLock};

use poem::{
    Endpoint, IntoEndpoint, IntoResponse, Middleware, Request, Response, Route,
    endpoint::BoxEndpoint,
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::{Cors, CorsEndpoint},
};
use poem_openapi::{OpenApi, OpenApiService, Tags};
use prometheus_client::metrics::histogram::Histogram;

use crate::{
    error::Error,
    metrics::{Metrics, RequestLabels, RouteLabels},
    state::AppState,
};

/// Request bodies larger than this are refused with `413` before anything reads them.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Tags)]
enum Tag {
    /// Tokens (RFC 6749, RFC 9068).
    #[oai(rename = "OAuth 2.0")]
    OAuth,
    /// Keys and metadata for resource servers.
    Discovery,
    /// Accounts, sessions and passwords.
    Users,
    /// User administration (scope `admin`).
    Admin,
    /// Health and operations.
    Operations,
}

/// Every operation of the contract.
type Operations = (
    token::TokenApi,
    revoke::RevokeApi,
    feed::FeedApi,
    discovery::DiscoveryApi,
    users::UsersApi,
    userinfo::UserInfoApi,
    sessions::SessionsApi,
    admin::AdminApi,
    ops::OpsApi,
);

/// The OpenAPI service of the [`Operations`].
pub fn api(issuer: &str) -> OpenApiService<Operations, ()> {
    OpenApiService::new(
        Operations::default(),
        "Portcullis",
        env!("CARGO_PKG_VERSION"),
    )
    .description("An OAuth 2.0 authorization server: RS256 JWT access tokens, rotating refresh tokens, a JWKS.")
    .server(issuer)
}

/// Every route, with the middleware every response passes through.
pub fn routes(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    let api = api(&state.settings.issuer());
    let documents = Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui());
    let cors = cors(
        &state.settings.server.cors_origins,
        &state.settings.server.issuer,
    );
    let metrics = state.metrics.clone();
    let latency = ROUTES
        .iter()
        .map(|route| {
            metrics
                .latency
                .get_or_create(&RouteLabels { route })
                .clone()
        })
        .collect();
    let edge = Arc::new(Edge {
        api: api.into_endpoint(),
        documents,
        state,
    });
    // CORS sits outside the error rendering, so that a browser can read an error too.
    let cors = cors.map(|cors| cors.transform(edge.clone()));
    Observe {
        edge,
        cors,
        metrics,
        latency,
    }
}

// The middleware is two hand-written endpoints rather than a stack of poem's combinators, each of whose
// futures holds its own copy of the request beside the whole future beneath it.

/// Inside CORS: the shared state, the body limit, one rendering of every error, and the headers every
/// response carries. Never fails.
///
/// The documents sit beside the API rather than above it, which would add a routing layer, a boxed future
/// and a rebuilt URI to every request. For the same reason a `GET` of the JWKS, which every resource server polls, is answered here with the documented
/// operation's own answer, without poem-openapi's routing, extractors and four more boxed futures.
struct Edge {
    api: BoxEndpoint<'static>,
    documents: Route,
    state: Arc<AppState>,
}

impl Endpoint for Edge {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        let docs = path == "/docs" || path.starts_with("/docs/");
        let read_timeout = self.state.settings.server.read_timeout();
        let result = match limit_body(&mut req, read_timeout).await {
            Ok(()) => match (req.method(), req.uri().path()) {
                (&Method::GET, "/.well-known/jwks.json") => {
                    Ok(discovery::jwks_answer(&self.state, &req))
                }
                (_, "/openapi.json" | "/docs") => self.documents.call(req).await,
                // The pages' futures are large and their requests rare: each is boxed, so that the
                // future of every other request stays as small as it was without them.
                (&Method::GET | &Method::POST, "/oauth/authorize") => {
                    Ok(Box::pin(authorize::answer(&self.state, req)).await)
                }
                (&Method::GET | &Method::POST, "/oauth/logout") => {
                    Ok(Box::pin(logout::answer(&self.state, req)).await)
                }
                (&Method::GET | &Method::POST, "/signup") => {
                    Ok(Box::pin(signup::answer(&self.state, req)).await)
                }
                (&Method::GET | &Method::POST, "/password-reset") => {
                    Ok(Box::pin(recovery::password_reset(&self.state, req)).await)
                }
                (&Method::GET | &Method::POST, "/verify-email") => {
                    Ok(Box::pin(recovery::verify_email(&self.state, req)).await)
                }
                (_, p) if p.starts_with("/docs/") => self.documents.call(req).await,
                _ => {
                    req.extensions_mut().insert(self.state.clone());
                    self.api.call(req).await
                }
            },
            Err(e) => Err(e),
        };
        let mut resp = result.unwrap_or_else(render_error);
        let headers = resp.headers_mut();
        common_headers(headers);
        if docs {
            protect_page(headers, DOCS_CSP);
        }
        Ok(resp)
    }
}

/// The headers every response carries. Tokens and account data must not be cached (RFC 6749 §5.1); what
/// may be cached (the JWKS) says so itself.
fn common_headers(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// Swagger UI is one page of inline script and style calling this server; nothing else may load, and
/// no other site may frame its Authorize form.
const DOCS_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The headers every HTML page carries, so that no other site can frame it or learn its URL.
fn protect_page(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Outermost: one log line and one sample per request, and CORS on the routes of [`CORS_ROUTES`]. The span
/// carries a request id, and handlers add the client id, `jti` and session where they learn them; nothing
/// here reads a body or a credential.
struct Observe {
    edge: Arc<Edge>,
    /// The same edge behind CORS, when `server.cors_origins` is set.
    cors: Option<CorsEndpoint<Arc<Edge>>>,
    metrics: Arc<Metrics>,
    /// Each route's latency histogram, by its index in [`ROUTES`], looked up once rather than hashed and
    /// locked on every request.
    latency: Box<[Histogram]>,
}

impl Endpoint for Observe {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        use tracing::Instrument;
        let request_id = req
            .headers()
            .get("x-request-id")
            .filter(|v| {
                v.len() <= 64
                    && v.as_bytes()
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .cloned()
            .unwrap_or_else(|| {
                let mut id = [0; uuid::fmt::Simple::LENGTH];
                HeaderValue::from_str(uuid::Uuid::new_v4().simple().encode_lower(&mut id))
                    .expect("hex digits are a valid header value")
            });
        let route_index = route_index(req.uri().path());
        let route = ROUTES[route_index].as_str();
        let method = method_label(req.method());
        let span = tracing::info_span!(
            "request",
            request_id = %request_id.to_str().unwrap_or_default(),
            method = %req.method(),
            route,
            client_id = tracing::field::Empty,
            jti = tracing::field::Empty,
            sid = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let mut resp = match &self.cors {
            Some(cors) if CORS_ROUTES.contains(&route) => {
                let result = cors.call(req).instrument(span.clone()).await;
                // CORS refuses an origin with an error, and answers a preflight itself: neither passed
                // through the edge.
                let mut resp = result.unwrap_or_else(render_error);
                let headers = resp.headers_mut();
                common_headers(headers);
                // The answer depends on the origin (allowed, refused, or none): caches must key on it.
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
                resp
            }
            _ => self
                .edge
                .call(req)
                .instrument(span.clone())
                .await
                .unwrap_or_else(render_error),
        };
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency[route_index].observe(elapsed.as_secs_f64());
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            )
        });
        resp.headers_mut().insert("x-request-id", request_id);
        Ok(resp)
    }
}

/// Every route label: each operation's path as the OpenAPI document spells it, the documents, and `other`
/// for everything else. It is read off the operations so that none lacks a label, and stays this small
/// whatever paths clients send.
static ROUTES: LazyLock<Box<[String]>> = LazyLock::new(|| {
    let mut routes: Vec<String> = Vec::new();
    let paths = Operations::meta().into_iter().flat_map(|api| api.paths);
    for path in paths.map(|p| p.path).chain(DOCUMENTS.map(String::from)) {
        if !routes.contains(&path) {
            routes.push(path);
        }
    }
    routes.push("other".to_owned());
    routes.into()
});

/// The documents and pages [`routes`] serves beside the operations; everything under `/docs` counts as
/// `/docs`.
const DOCUMENTS: [&str; 7] = [
    "/openapi.json",
    "/docs",
    "/oauth/authorize",
    "/oauth/logout",
    "/signup",
    "/password-reset",
    "/verify-email",
];

/// The index in [`ROUTES`] of the route a path belongs to: the one it equals, else the first whose
/// template it fits, else `other`.
fn route_index(path: &str) -> usize {
    let path = if path.starts_with("/docs/") {
        "/docs"
    } else {
        path
    };
    ROUTES
        .iter()
        .position(|route| route == path)
        .or_else(|| ROUTES.iter().position(|route| fits(route, path)))
        .unwrap_or(ROUTES.len() - 1)
}

/// Whether `path` fits the path template `route`, in which each `{parameter}` stands for one non-empty
/// segment, as poem routes it.
fn fits(route: &str, path: &str) -> bool {
    let (mut route, mut path) = (route.split('/'), path.split('/'));
    loop {
        match (route.next(), path.next()) {
            (None, None) => return true,
            (Some(r), Some(p)) if r == p || (r.starts_with('{') && !p.is_empty()) => {}
            _ => return false,
        }
    }
}

/// The method as a label: HTTP lets a client send any token as a method, and each one kept would be
/// another series held for the life of the process.
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

/// The routes a browser may call from another origin (the contract's `server.cors_origins`): the token,
/// revocation, users and sessions endpoints, by their labels in [`ROUTES`].
const CORS_ROUTES: [&str; 12] = [
    "/oauth/token",
    "/oauth/revoke",
    // Single-page apps ask who signed in from the browser.
    "/oauth/userinfo",
    "/users",
    "/users/me",
    "/users/me/password",
    "/users/me/sessions",
    "/users/me/sessions/{id}",
    "/users/me/email-verification",
    "/users/email-verification/confirm",
    "/users/password-reset",
    "/users/password-reset/confirm",
];

/// CORS for the configured origins, and always for the issuer's own: browsers send `Origin` on a
/// same-origin `POST` too, so `/docs` calling the token endpoint would be refused otherwise.
fn cors(origins: &[String], issuer: &url::Url) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let own = issuer.origin().ascii_serialization();
    Some(
        Cors::new()
            .allow_origins(origins.iter().map(String::as_str).chain([own.as_str()]))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(false),
    )
}

/// Buffers the body, refusing more than [`MAX_BODY`] whether or not a `Content-Length` announced it, and
/// a body that takes longer than `read_timeout` to arrive.
async fn limit_body(req: &mut Request, read_timeout: std::time::Duration) -> poem::Result<()> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(Error::PayloadTooLarge.into());
    }
    let body = req.take_body();
    // Most requests have no body (a `GET`, or `Content-Length: 0`): nothing to read or to limit.
    if body.is_empty() {
        req.set_body(body);
        return Ok(());
    }
    let body = tokio::time::timeout(read_timeout, read_limited(body))
        .await
        .map_err(|_| Error::RequestTimeout)??;
    req.set_body(body);
    Ok(())
}

async fn read_limited(body: poem::Body) -> poem::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut reader = body.into_async_read();
    let mut body = Vec::new();
    let read = (&mut reader)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .await;
    read.map_err(|_| Error::invalid_request("the request body could not be read"))?;
    if body.len() > MAX_BODY {
        // Read (a bounded amount of) the rest before answering, so that the client, still sending,
        // receives the 413 rather than a reset connection.
        let _ = tokio::io::copy(&mut reader.take(DRAIN_LIMIT), &mut tokio::io::sink()).await;
        return Err(Error::PayloadTooLarge.into());
    }
    Ok(body)
}

/// The most of an oversized body that is read and discarded; anything larger is refused unread.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Renders any error as the contract's JSON envelope: ours as they are, poem's and poem-openapi's
/// (a malformed body, a wrong content type, a missing credential, an unknown route) mapped onto ours.
fn render_error(err: poem::Error) -> Response {
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };
    if err.is::<Error>() {
        return err.into_response();
    }
    let mapped = if err.is::<AuthorizationError>() {
        Error::MissingToken
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        Error::invalid_request(e.to_string())
    } else if err.is::<ParseRequestPayloadError>() {
        Error::invalid_request("malformed request body")
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        Error::invalid_request(format!("malformed parameter `{}`", e.name))
    } else if err.is::<ParsePathError>() {
        // poem-openapi names path parameters `param0`, which would mean nothing to a client.
        Error::invalid_request("malformed path parameter")
    } else {
        let status = err.status();
        if status.is_server_error() {
            Error::Internal(anyhow::anyhow!("{err}"))
        } else {
            let code = match status.as_u16() {
                404 => "not_found",
                405 => "method_not_allowed",
                _ => "invalid_request",
            };
            let body = serde_json::json!({ "error": code, "error_description": err.to_string() });
            return Response::builder()
                .status(status)
                .content_type("application/json")
                .body(body.to_string());
        }
    };
    mapped.into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fold_onto_a_fixed_set_of_route_labels() {
        let label = |path| ROUTES[route_index(path)].as_str();
        assert_eq!(label("/oauth/token"), "/oauth/token");
        assert_eq!(label("/users/me/sessions"), "/users/me/sessions");
        assert_eq!(
            label("/users/me/sessions/0193a0c4-7b5e-7000-8000-000000000000"),
            "/users/me/sessions/{id}"
        );
        assert_eq!(
            label("/admin/users/42/disable"),
            "/admin/users/{id}/disable"
        );
        assert_eq!(label("/admin/users/42/enable"), "/admin/users/{id}/enable");
        assert_eq!(label("/docs/index.css"), "/docs");
        assert_eq!(label("/openapi.json"), "/openapi.json");
        assert_eq!(label("/admin/users/42"), "other");
        assert_eq!(label("/admin/users/42/x/disable"), "other");
        assert_eq!(label("/users/me/sessions/a/b"), "other");
        assert_eq!(label("/users/me/sessions/"), "other");
        assert_eq!(label("/nowhere"), "other");
        let mut unique = ROUTES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ROUTES.len(), "each label once");
    }

    #[test]
    fn every_cors_route_is_a_route_label() {
        for route in CORS_ROUTES {
            assert!(ROUTES.iter().any(|r| r == route), "{route}");
        }
    }
}
