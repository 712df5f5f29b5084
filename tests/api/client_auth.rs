//! Client authentication at the token, revocation and introspection endpoints: an `Authorization`
//! header that is present but not valid HTTP Basic is `401 invalid_client`, never the default client.

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::StatusCode;

use crate::helpers::{assert_error, password_form, spawn_app};

on_both_databases! {
    async fn a_malformed_authorization_header_is_invalid_client_never_the_default_client(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let bearer = format!("Bearer {}", app.login(&user).await.access_token);
        let basic = |credentials: &str| format!("Basic {}", STANDARD.encode(credentials));
        let headers: Vec<(&str, String)> = vec![
            ("a Bearer token", bearer),
            ("another scheme", "Digest username=\"x\"".into()),
            ("a scheme alone", "Basic".into()),
            ("no scheme", "Og==".into()),
            ("an empty header", String::new()),
            ("not base64", "Basic !!not base64!!".into()),
            ("no colon", basic("just-an-id")),
            ("bad percent-encoding", basic("%zz:secret")),
            ("an empty id with a secret", basic(":secret")),
        ];
        let password = password_form(&user.username, &user.password);
        let sessions_before = app.count("sessions").await;

        for (case, header) in &headers {
            for (path, form) in [
                ("/oauth/token", &password[..]),
                ("/oauth/revoke", &[("token", "anything")][..]),
                ("/oauth/introspect", &[("token", "anything")][..]),
            ] {
                // Act
                let resp = app.http.post(app.url(path)).header("authorization", header).form(form).send().await.unwrap();

                // Assert
                let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
                assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Basic")), "{case} at {path}: {challenge:?}");
                let body = assert_error(resp, 401, "invalid_client").await;
                assert!(body["error_description"].is_string(), "{case} at {path}");
            }
        }
        assert_eq!(app.count("sessions").await, sessions_before, "no malformed header logged anybody in");

        // Swagger UI's empty Basic still counts as no client.
        let empty = app.http.post(app.url("/oauth/token")).header("authorization", "Basic Og==").form(&password).send().await.unwrap();
        assert_eq!(empty.status(), StatusCode::OK);
    }
}
