//! Bad input at the token endpoint and at registration: each gets its exact 4xx in the contract's
//! shape, never a 500, and nothing is written.

use portcullis::value::grant_type::GrantType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, spawn_app};

/// (case, content type, body, Basic credentials, status, error code)
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    Option<(&'a str, &'a str)>,
    u16,
    &'a str,
);

on_both_databases! {
    async fn bad_token_requests_get_their_exact_error_and_write_nothing(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let confidential = app.seed_client(false, &[GrantType::Password], "profile").await;
        let secret = confidential.secret.clone().unwrap();
        let long = "x".repeat(10_000);
        let ok = format!("grant_type=password&username={}&password=correct+horse+battery+staple", user.username);
        let form = "application/x-www-form-urlencoded";
        let users_before = app.count("users").await;

        let cases: Vec<Case> = vec![
            ("a JSON body", "application/json", format!(r#"{{"grant_type":"password","username":"{}"}}"#, user.username), None, 400, "invalid_request"),
            ("no content type", "", ok.clone(), None, 400, "invalid_request"),
            ("no grant_type", form, format!("username={}&password=x", user.username), None, 400, "invalid_request"),
            ("an empty grant_type", form, format!("grant_type=&username={}&password=x", user.username), None, 400, "invalid_request"),
            ("no password", form, format!("grant_type=password&username={}", user.username), None, 400, "invalid_request"),
            ("no username", form, "grant_type=password&password=x".into(), None, 400, "invalid_request"),
            ("a repeated parameter", form, format!("{ok}&username={}", user.username), None, 400, "invalid_request"),
            ("a repeated grant_type", form, format!("grant_type=password&{ok}"), None, 400, "invalid_request"),
            // RFC 6749 §3.2 forbids repeating any parameter, even one the grant ignores.
            ("a repeated unknown parameter", form, format!("{ok}&extra=1&extra=2"), None, 400, "invalid_request"),
            ("an unknown grant_type", form, "grant_type=magic".into(), None, 400, "unsupported_grant_type"),
            ("invalid UTF-8", form, format!("grant_type=password&username={}&password=%C3%28", user.username), None, 400, "invalid_request"),
            ("a 10,000-character username", form, format!("grant_type=password&username={long}&password=x"), None, 400, "invalid_request"),
            ("a 10,000-character password", form, format!("grant_type=password&username={}&password={long}", user.username), None, 400, "invalid_request"),
            ("a 10,000-character client_id", form, format!("{ok}&client_id={long}"), None, 400, "invalid_request"),
            ("a malformed scope", form, format!("{ok}&scope=a%22b"), None, 400, "invalid_scope"),
            ("an unknown client by id", form, format!("{ok}&client_id=nobody"), None, 401, "invalid_client"),
            ("an unknown client by Basic", form, ok.clone(), Some(("nobody", "secret")), 401, "invalid_client"),
            ("a wrong secret by Basic", form, ok.clone(), Some((&confidential.id, "wrong")), 401, "invalid_client"),
            ("a wrong secret by post", form, format!("{ok}&client_id={}&client_secret=wrong", confidential.id), None, 401, "invalid_client"),
            ("a confidential client without its secret", form, format!("{ok}&client_id={}", confidential.id), None, 401, "invalid_client"),
            ("a public client with a secret", form, format!("{ok}&client_id={}&client_secret=x", app.settings.clients.default_client_id), None, 401, "invalid_client"),
            ("two authentication methods", form, format!("{ok}&client_secret={secret}"), Some((&confidential.id, &secret)), 400, "invalid_request"),
            ("a secret without a client_id", form, format!("{ok}&client_secret={secret}"), None, 400, "invalid_request"),
        ];

        for (case, content_type, body, basic, status, code) in cases {
            // Act
            let mut request = app.http.post(app.url("/oauth/token")).body(body);
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            if let Some((id, secret)) = basic {
                request = request.basic_auth(id, Some(secret));
            }
            let resp = request.send().await.unwrap();
            let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());

            // Assert
            let body = assert_error(resp, status, code).await;
            assert!(body["error_description"].is_string(), "{case}: {body}");
            match (code, basic) {
                ("invalid_client", Some(_)) => assert_eq!(challenge.as_deref(), Some(r#"Basic realm="portcullis""#), "{case}"),
                _ => assert_eq!(challenge, None, "{case}"),
            }
        }
        // Garbage in the Authorization header is a failed Basic authentication.
        let resp = app.http.post(app.url("/oauth/token")).header("authorization", "Basic !!!").form(&[("grant_type", "password")]).send().await.unwrap();
        assert_error(resp, 401, "invalid_client").await;

        assert_eq!(app.count("sessions").await, 0);
        assert_eq!(app.count("users").await, users_before);
    }

    async fn a_body_over_64_kib_is_413_with_or_without_a_content_length(backend: Backend) {
        let app = spawn_app(backend).await;
        let big = format!("grant_type=password&username=alice&password={}", "x".repeat(70 * 1024));

        let resp = app.http.post(app.url("/oauth/token")).header("content-type", "application/x-www-form-urlencoded").body(big.clone()).send().await.unwrap();
        assert_error(resp, 413, "invalid_request").await;
        let resp = app.http.post(app.url("/users")).header("content-type", "application/json").body(format!(r#"{{"username":"alice","password":"{}"}}"#, "x".repeat(70 * 1024))).send().await.unwrap();
        assert_error(resp, 413, "invalid_request").await;

        // Chunked, so that no Content-Length announces the size.
        let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
        let head = "POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        for chunk in big.as_bytes().chunks(8192) {
            let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
            let _ = stream.write_all(chunk).await;
            let _ = stream.write_all(b"\r\n").await;
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert_eq!(app.count("users").await, 0);
    }

    async fn bad_registrations_get_their_exact_error_and_write_nothing(backend: Backend) {
        let app = spawn_app(backend).await;
        let long = "x".repeat(10_000);
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("not JSON", "{username".into(), 400, "invalid_request"),
            ("no password", r#"{"username":"alice"}"#.into(), 400, "invalid_request"),
            ("a list for a password", r#"{"username":"alice","password":["correct horse battery"]}"#.into(), 400, "invalid_request"),
            ("a 10,000-character username", format!(r#"{{"username":"{long}","password":"correct horse battery"}}"#), 422, "invalid_username"),
            ("a 10,000-character password", format!(r#"{{"username":"alice","password":"{long}"}}"#), 422, "password_too_long"),
        ];
        for (case, body, status, code) in cases {
            let resp = app.http.post(app.url("/users")).header("content-type", "application/json").body(body).send().await.unwrap();
            let body = assert_error(resp, status, code).await;
            assert!(body["error_description"].is_string(), "{case}");
        }
        assert_eq!(app.count("users").await, 0);
    }
}
