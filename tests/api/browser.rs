//! What browsers rely on: `/docs` cannot be framed by another site, and CORS answers only on the routes
//! the contract opens to browsers (token, revocation, users, sessions), with `Vary: Origin`.

use reqwest::{Method, Response};

use crate::helpers::{Backend, TestApp, assert_error, spawn_app, spawn_app_with};

const ORIGIN: &str = "https://app.example.com";

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn varies_on_origin(resp: &Response) -> bool {
    resp.headers()
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin"))
}

on_both_databases! {
    async fn the_docs_pages_cannot_be_framed_and_leak_no_referrer(backend: Backend) {
        let app = spawn_app(backend).await;
        for path in ["/docs", "/docs/oauth-receiver.html"] {
            let resp = app.http.get(app.url(path)).send().await.unwrap();

            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(header(&resp, "x-frame-options").as_deref(), Some("DENY"), "{path}");
            assert_eq!(header(&resp, "x-content-type-options").as_deref(), Some("nosniff"), "{path}");
            assert_eq!(header(&resp, "referrer-policy").as_deref(), Some("no-referrer"), "{path}");
            assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"), "{path}");
            let csp = header(&resp, "content-security-policy").unwrap_or_default();
            let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
            assert!(directives.contains(&"frame-ancestors 'none'"), "{path}: {csp}");
            assert!(directives.contains(&"default-src 'none'"), "{path}: {csp}");
            assert!(!csp.contains('*') && !csp.contains("http"), "{path}: no other site may serve it anything: {csp}");
        }
    }

    async fn cors_answers_only_on_the_token_revocation_users_and_sessions_routes(backend: Backend) {
        // Arrange
        let app = spawn_app_with(backend, |s| s.server.cors_origins = vec![ORIGIN.into()]).await;
        let preflight = |path: &str, method: &str| {
            app.http
                .request(Method::OPTIONS, app.url(path))
                .header("origin", ORIGIN)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", "authorization")
                .send()
        };
        let opened = [
            ("/oauth/token", "POST"),
            ("/oauth/revoke", "POST"),
            ("/users", "POST"),
            ("/users/me", "GET"),
            ("/users/me/password", "POST"),
            ("/users/me/sessions", "GET"),
            ("/users/me/sessions", "DELETE"),
            ("/users/me/sessions/0193a0c4-7b5e-7000-8000-000000000000", "DELETE"),
            ("/users/me", "PATCH"),
            ("/users/me/email-verification", "POST"),
            ("/users/email-verification/confirm", "POST"),
            ("/users/password-reset", "POST"),
            ("/users/password-reset/confirm", "POST"),
        ];
        let closed = [
            ("/oauth/introspect", "POST"),
            ("/oauth/revocations", "GET"),
            ("/admin/users", "GET"),
            ("/admin/users/0193a0c4-7b5e-7000-8000-000000000000/disable", "POST"),
            ("/metrics", "GET"),
            ("/healthz", "GET"),
            ("/readyz", "GET"),
            ("/.well-known/jwks.json", "GET"),
            ("/.well-known/oauth-authorization-server", "GET"),
            ("/openapi.json", "GET"),
            ("/docs", "GET"),
        ];

        for (path, method) in opened {
            // Act
            let approved = preflight(path, method).await.unwrap();
            let method: Method = method.parse().unwrap();
            let actual = app.http.request(method.clone(), app.url(path)).header("origin", ORIGIN).send().await.unwrap();
            let no_origin = app.http.request(method, app.url(path)).send().await.unwrap();

            // Assert: approved, and every answer of the route varies on Origin, with or without one.
            assert!(approved.status().is_success(), "preflight {path}: {}", approved.status());
            assert_eq!(header(&approved, "access-control-allow-origin").as_deref(), Some(ORIGIN), "preflight {path}");
            assert_eq!(header(&actual, "access-control-allow-origin").as_deref(), Some(ORIGIN), "{path}");
            assert!(header(&no_origin, "access-control-allow-origin").is_none(), "{path} without Origin");
            for (what, resp) in [("preflight", &approved), ("with Origin", &actual), ("without Origin", &no_origin)] {
                assert!(varies_on_origin(resp), "{path} {what}: {:?}", resp.headers());
                assert_eq!(header(resp, "cache-control").as_deref(), Some("no-store"), "{path} {what}");
            }
        }
        for (path, method) in closed {
            let refused = preflight(path, method).await.unwrap();
            let method: Method = method.parse().unwrap();
            let actual = app.http.request(method, app.url(path)).header("origin", ORIGIN).send().await.unwrap();

            // A preflight is approved by its CORS headers, whatever its status.
            for (what, resp) in [("preflight", &refused), ("with Origin", &actual)] {
                assert!(!resp.status().is_server_error(), "{path} {what}: {}", resp.status());
                assert!(header(resp, "access-control-allow-origin").is_none(), "{path} {what}");
                assert!(header(resp, "access-control-allow-methods").is_none(), "{path} {what}");
            }
        }

        // Another origin is refused in the error format, and that answer varies on Origin too.
        let other = app.http.post(app.url("/oauth/token")).header("origin", "https://evil.example").form(&[("grant_type", "password")]).send().await.unwrap();
        assert!(header(&other, "access-control-allow-origin").is_none());
        assert!(varies_on_origin(&other));
        assert_error(other, 403, "invalid_request").await;

        // Without cors_origins: no CORS headers, and nothing varies on Origin.
        let plain = spawn_app(backend).await;
        let resp = plain.http.post(plain.url("/oauth/token")).header("origin", ORIGIN).form(&[("grant_type", "password")]).send().await.unwrap();
        assert!(header(&resp, "access-control-allow-origin").is_none());
        assert!(!varies_on_origin(&resp));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_for_configured_origins_only() {
    let preflight = |app: &TestApp, origin: &str| {
        app.http
            .request(Method::OPTIONS, app.url("/oauth/token"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allow_origin = |resp: &Response| header(resp, "access-control-allow-origin");

    // Configured: the listed origin is allowed, another is not.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.server.cors_origins = vec![ORIGIN.into()]
    })
    .await;
    let allowed = preflight(&app, ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allow_origin(&allowed).as_deref(), Some(ORIGIN));
    let other = preflight(&app, "https://evil.example").await.unwrap();
    assert_eq!(allow_origin(&other), None);
    // The contract opens only the token, revocation, users and sessions endpoints to browsers.
    let jwks = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&jwks), None);

    // Not configured: no CORS headers at all.
    let plain = spawn_app(Backend::Sqlite).await;
    let resp = preflight(&plain, ORIGIN).await.unwrap();
    assert_eq!(allow_origin(&resp), None);
}
