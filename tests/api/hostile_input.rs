//! Hostile input in every field, parameter and header that each endpoint of the OpenAPI document reads:
//! NUL characters, lone surrogates (escaped, in JSON), 10,000-character values, huge numbers and wrong
//! types. Each is a 4xx in the contract's error format (or a harmless documented 2xx), never a 5xx and
//! never a dropped connection; a NUL is refused at the edge, before any lookup.

use base64::{Engine, engine::general_purpose::STANDARD};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use portcullis::value::grant_type::GrantType;
use reqwest::{Method, RequestBuilder, header::HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Deny, PASSWORD, TestApp, assert_error, password_form, spawn_app_on};

/// What a case may be answered with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly this status and `error` code.
    Error(u16, &'static str),
    /// Any 4xx in the error format, or one of these statuses (a success that does no harm).
    Refused(&'static [u16]),
}

const NOTHING: Expect = Expect::Refused(&[]);

/// Sends one case and checks the answer: never a 5xx, never a dropped connection.
async fn probe(case: &str, request: RequestBuilder, expect: Expect) {
    let resp = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{case}: no answer: {e}"));
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{case}: the answer broke off: {e}"));
    assert!(status < 500, "{case}: {status} {text}");
    let (expected_status, code) = match expect {
        Expect::Error(status, code) => (Some(status), Some(code)),
        Expect::Refused(fine) if fine.contains(&status) => return,
        Expect::Refused(_) => (None, None),
    };
    if let Some(expected) = expected_status {
        assert_eq!(status, expected, "{case}: {text}");
    }
    assert!((400..500).contains(&status), "{case}: {status} {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{case}: not JSON: {text}"));
    assert!(body["error"].is_string(), "{case}: {text}");
    if let Some(code) = code {
        assert_eq!(body["error"], code, "{case}: {text}");
    }
}

/// Hostile text for a form field, a query or path parameter, or a credential.
fn texts() -> Vec<(&'static str, String)> {
    vec![
        ("a NUL", "a\0b".into()),
        ("10,000 characters", "x".repeat(10_000)),
        ("non-ASCII and bidi", "ü😀\u{202e}".into()),
        ("CR LF", "a\r\nb".into()),
        (
            "a number past 2^128",
            "340282366920938463463374607431768211457".into(),
        ),
        ("a number below -2^63", "-9223372036854775809".into()),
    ]
}

/// Hostile JSON values, as raw JSON text.
fn json_values() -> Vec<(&'static str, String)> {
    vec![
        ("a NUL", r#""ab\u0000cd""#.into()),
        ("a lone high surrogate", r#""\ud800abc""#.into()),
        ("a lone low surrogate", r#""abc\udc00""#.into()),
        ("10,000 characters", format!("\"{}\"", "x".repeat(10_000))),
        ("non-ASCII and bidi", "\"ü😀\u{202e}\"".into()),
        ("a number too big for a double", "1e999".into()),
        ("an integer past 2^64", "18446744073709551616".into()),
        ("a boolean", "true".into()),
        ("a list", r#"["a"]"#.into()),
        ("an object", r#"{"a":"b"}"#.into()),
        ("null", "null".into()),
    ]
}

/// What a NUL in a text gets: `invalid_request` at the edge. Other hostile values get `otherwise`.
fn nul_or(label: &str, otherwise: Expect) -> Expect {
    if label == "a NUL" {
        Expect::Error(400, "invalid_request")
    } else {
        otherwise
    }
}

/// What a NUL or a lone surrogate in JSON gets: `invalid_request` at the edge.
fn json_nul_or(label: &str, otherwise: Expect) -> Expect {
    if label == "a NUL" || label.starts_with("a lone") {
        Expect::Error(400, "invalid_request")
    } else {
        otherwise
    }
}

/// Percent-encoded, every byte but ASCII letters and digits.
fn encoded(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// [`texts`], percent-encoded for a URL.
fn encoded_texts() -> Vec<(&'static str, String)> {
    texts()
        .into_iter()
        .map(|(label, text)| (label, encoded(&text)))
        .collect()
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 builds it: id and secret form-urlencoded, then base64.
fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encoded(id), encoded(secret)))
    )
}

/// A JSON object from raw JSON values.
fn json_object(fields: &[(&str, String)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Header values that are valid HTTP but hostile, for a header the endpoint reads.
fn header_values() -> Vec<(&'static str, HeaderValue)> {
    vec![
        (
            "10,000 characters",
            HeaderValue::from_str(&"x".repeat(10_000)).unwrap(),
        ),
        (
            "raw non-UTF-8 bytes",
            HeaderValue::from_bytes(b"a\xff\xfe b").unwrap(),
        ),
        (
            "raw UTF-8 bytes",
            HeaderValue::from_bytes("ü😀".as_bytes()).unwrap(),
        ),
        (
            "nonsense",
            HeaderValue::from_static(",,, ;;; \"\" W/ * 999.999.1.1 ::zz"),
        ),
    ]
}

fn authorization_values() -> Vec<(&'static str, HeaderValue)> {
    let long = format!("Bearer {}", "x".repeat(10_000));
    vec![
        (
            "a 10,000-character bearer token",
            HeaderValue::from_str(&long).unwrap(),
        ),
        (
            "a bearer token of raw bytes",
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        ),
        (
            "a bearer token of three dots",
            HeaderValue::from_static("Bearer a.b.c"),
        ),
        ("an empty bearer token", HeaderValue::from_static("Bearer ")),
        (
            "Basic on a Bearer route",
            HeaderValue::from_static("Basic Og=="),
        ),
        (
            "an unknown scheme",
            HeaderValue::from_static("Negotiate abc"),
        ),
    ]
}

struct Seeded {
    user_token: String,
    admin_token: String,
    confidential: (String, String),
    refresh_token: String,
    client_token: String,
}

async fn seed(app: &TestApp) -> Seeded {
    let user = app.seed_user().await;
    let admin = app.seed_admin().await;
    let client = app.seed_client(false, &GrantType::ALL, "profile").await;
    let secret = client.secret.clone().unwrap();
    let login = app
        .token_basic(
            &client.id,
            &secret,
            &password_form(&user.username, PASSWORD),
        )
        .await;
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.unwrap();
    let credentials = app
        .token_basic(&client.id, &secret, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(credentials.status(), 200);
    let credentials: Value = credentials.json().await.unwrap();
    Seeded {
        user_token: app.login(&user).await.access_token,
        admin_token: app.login(&admin).await.access_token,
        confidential: (client.id, secret),
        refresh_token: login["refresh_token"].as_str().unwrap().to_owned(),
        client_token: credentials["access_token"].as_str().unwrap().to_owned(),
    }
}

on_both_databases! {
    async fn hostile_input_anywhere_is_a_4xx_never_a_5xx_or_a_dropped_connection(backend: Backend) {
        let app = spawn_app_on(backend, Deny::Redis).await;
        let seeded = seed(&app).await;
        let (client_id, secret) = (&seeded.confidential.0, &seeded.confidential.1);

        form_endpoints(&app, &seeded).await;
        json_endpoints(&app, &seeded).await;
        bearer_and_query_endpoints(&app, &seeded).await;

        // Basic credentials at every endpoint that reads them; a NUL never reaches the client lookup.
        for (label, text) in texts() {
            let expect = if label == "a NUL" { Expect::Error(401, "invalid_client") } else { NOTHING };
            for (id, secret) in [(text.as_str(), secret.as_str()), (client_id.as_str(), text.as_str())] {
                let header = basic(id, secret);
                for (path, body) in [
                    ("/oauth/token", "grant_type=client_credentials"),
                    ("/oauth/revoke", "token=abc"),
                    ("/oauth/introspect", "token=abc"),
                ] {
                    let request = app.http.post(app.url(path)).header("authorization", &header)
                        .header("content-type", "application/x-www-form-urlencoded").body(body);
                    probe(&format!("POST {path}, Basic credentials with {label}"), request, expect).await;
                }
                let request = app.http.get(app.url("/oauth/revocations")).header("authorization", &header);
                probe(&format!("GET /oauth/revocations, Basic credentials with {label}"), request, expect).await;
            }
        }
        for (label, value) in header_values() {
            let value = HeaderValue::from_bytes(&[b"Basic ", value.as_bytes()].concat()).unwrap();
            for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
                let request = app.http.post(app.url(path)).header("authorization", value.clone()).form(&[("token", "abc")]);
                probe(&format!("POST {path}, Authorization: Basic {label}"), request, NOTHING).await;
            }
        }

        // Headers every endpoint may read: the request id, the forwarded address, conditional requests,
        // and a content type on the endpoints with a body.
        let everything = [
            (Method::POST, "/oauth/token"), (Method::POST, "/oauth/revoke"), (Method::POST, "/oauth/introspect"),
            (Method::GET, "/oauth/revocations"), (Method::POST, "/users"), (Method::GET, "/users/me"),
            (Method::POST, "/users/me/password"), (Method::GET, "/users/me/sessions"), (Method::GET, "/admin/users"),
            (Method::GET, "/.well-known/oauth-authorization-server"), (Method::GET, "/.well-known/openid-configuration"),
            (Method::GET, "/.well-known/jwks.json"), (Method::GET, "/healthz"), (Method::GET, "/readyz"), (Method::GET, "/metrics"),
        ];
        for (method, path) in &everything {
            for header in ["x-request-id", "x-forwarded-for", "if-none-match", "content-type"] {
                for (label, value) in header_values() {
                    let case = format!("{method} {path}, {header}: {label}");
                    let request = app.http.request(method.clone(), app.url(path)).header(header, value.clone())
                        .bearer_auth(&seeded.admin_token);
                    let request = if *method == Method::POST {
                        request.body("{}")
                    } else {
                        request
                    };
                    // A GET reads no body, so a strange content type is harmless there.
                    let fine: &'static [u16] = if *method == Method::GET { &[200, 304] } else { &[] };
                    probe(&case, request, Expect::Refused(fine)).await;
                }
            }
            // A NUL and a 10,000-character value in the query string of every endpoint.
            let query = format!("?since=%00&limit=%00&x={}&%00=1", "y".repeat(10_000));
            let request = app.http.request(method.clone(), app.url(&format!("{path}{query}"))).bearer_auth(&seeded.admin_token);
            let fine: &'static [u16] = if *method == Method::GET && *path != "/admin/users" { &[200] } else { &[] };
            probe(&format!("{method} {path} with a hostile query string"), request, Expect::Refused(fine)).await;
        }

        // A NUL inside a header is refused by the HTTP layer itself, with an answer, not a reset.
        for path in ["/users/me", "/oauth/revocations", "/healthz"] {
            let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\0b\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 4"), "GET {path} with a NUL in a header: {answer}");
        }

        // The server still serves, and the seeded tokens still work.
        assert_eq!(app.me(&seeded.user_token).await.status(), 200);
        let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// The token endpoint with each grant type, revocation and introspection: every form field.
async fn form_endpoints(app: &TestApp, seeded: &Seeded) {
    let (client_id, secret) = (&seeded.confidential.0, &seeded.confidential.1);
    let with_client = |fields: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut all: Vec<(&'static str, String)> =
            fields.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        all.push(("client_id", client_id.clone()));
        all.push(("client_secret", secret.clone()));
        all
    };
    let mut forms = vec![
        (
            "/oauth/token",
            "password grant",
            with_client(&[
                ("grant_type", "password"),
                ("username", "someone"),
                ("password", PASSWORD),
                ("scope", "profile"),
            ]),
            NOTHING,
        ),
        (
            "/oauth/token",
            "refresh_token grant",
            with_client(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &seeded.refresh_token),
                ("scope", "profile"),
            ]),
            NOTHING,
        ),
        (
            "/oauth/token",
            "client_credentials grant",
            with_client(&[("grant_type", "client_credentials"), ("scope", "profile")]),
            NOTHING,
        ),
    ];
    // RFC 7009 §2.2 and RFC 7662 §2.2: a token that is not one is answered like any other.
    for (path, what) in [
        ("/oauth/revoke", "revocation"),
        ("/oauth/introspect", "introspection"),
    ] {
        let form = with_client(&[
            ("token", &seeded.client_token),
            ("token_type_hint", "access_token"),
        ]);
        forms.push((path, what, form, Expect::Refused(&[200])));
    }
    for (path, what, form, otherwise) in forms {
        for field in 0..form.len() {
            for (label, text) in texts() {
                let mut hostile = form.clone();
                hostile[field].1 = text;
                let case = format!("POST {path} ({what}), {} with {label}", form[field].0);
                let request = app.http.post(app.url(path)).form(&hostile);
                probe(&case, request, nul_or(label, otherwise)).await;
            }
        }
        // A NUL in a parameter's name, and in one the endpoint does not know.
        for extra in ["pass%00word=x", "extension=%00"] {
            let body = format!("{}&{extra}", form_body(&form));
            let request = app
                .http
                .post(app.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            probe(
                &format!("POST {path} ({what}) with {extra}"),
                request,
                Expect::Error(400, "invalid_request"),
            )
            .await;
        }
    }
}

/// A form body of these parameters, encoded.
fn form_body(form: &[(&str, String)]) -> String {
    form.iter()
        .map(|(n, v)| format!("{n}={}", encoded(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Registration and the password change: every JSON field, and bodies that are not the object asked for.
async fn json_endpoints(app: &TestApp, seeded: &Seeded) {
    let quoted = |s: &str| Value::from(s).to_string();
    for field in ["username", "password", "email"] {
        for (label, value) in json_values() {
            // A name of its own each time, so that a registration that is fine does not make the next one
            // a conflict.
            let name = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let mut fields = vec![
                ("username", quoted(&name)),
                ("password", quoted(PASSWORD)),
                ("email", quoted(&format!("{name}@example.com"))),
            ];
            fields.iter_mut().find(|(n, _)| *n == field).unwrap().1 = value;
            let request = app
                .http
                .post(app.url("/users"))
                .header("content-type", "application/json")
                .body(json_object(&fields));
            let case = format!("POST /users, {field} with {label}");
            probe(&case, request, json_nul_or(label, Expect::Refused(&[201]))).await;
        }
    }
    for field in ["current_password", "new_password"] {
        for (label, value) in json_values() {
            let mut fields = vec![
                ("current_password", quoted(PASSWORD)),
                ("new_password", quoted("another correct horse")),
            ];
            fields.iter_mut().find(|(n, _)| *n == field).unwrap().1 = value;
            let request = app
                .http
                .post(app.url("/users/me/password"))
                .bearer_auth(&seeded.user_token)
                .header("content-type", "application/json")
                .body(json_object(&fields));
            let case = format!("POST /users/me/password, {field} with {label}");
            probe(&case, request, json_nul_or(label, NOTHING)).await;
        }
    }
    // Whole bodies of the wrong shape, and a NUL in a member's name.
    for (label, value) in json_values().into_iter().chain([
        (
            "a NUL in a name",
            r#"{"username":"alice","pass\u0000word":"x"}"#.to_owned(),
        ),
        ("a truncated object", r#"{"username":"#.to_owned()),
        ("a raw NUL byte", "{\"username\":\"a\0b\"}".to_owned()),
        ("nothing", String::new()),
    ]) {
        let expect = if label == "a NUL in a name" {
            Expect::Error(400, "invalid_request")
        } else {
            NOTHING
        };
        for path in ["/users", "/users/me/password"] {
            let request = app
                .http
                .post(app.url(path))
                .bearer_auth(&seeded.user_token)
                .header("content-type", "application/json")
                .body(value.clone());
            probe(
                &format!("POST {path}, the whole body {label}"),
                request,
                expect,
            )
            .await;
        }
    }
}

/// Bearer routes (with hostile tokens), path ids, the admin list's numbers, and the revocation feed's cursor.
async fn bearer_and_query_endpoints(app: &TestApp, seeded: &Seeded) {
    let bearer_routes = [
        (Method::GET, "/users/me".to_owned()),
        (Method::POST, "/users/me/password".to_owned()),
        (Method::GET, "/users/me/sessions".to_owned()),
        (Method::DELETE, "/users/me/sessions".to_owned()),
        (
            Method::DELETE,
            format!("/users/me/sessions/{}", uuid::Uuid::nil()),
        ),
        (Method::GET, "/admin/users".to_owned()),
        (
            Method::POST,
            format!("/admin/users/{}/disable", uuid::Uuid::nil()),
        ),
        (
            Method::POST,
            format!("/admin/users/{}/enable", uuid::Uuid::nil()),
        ),
    ];
    for (method, path) in &bearer_routes {
        for (label, value) in authorization_values() {
            let request = app
                .http
                .request(method.clone(), app.url(path))
                .header("authorization", value);
            probe(
                &format!("{method} {path}, Authorization: {label}"),
                request,
                NOTHING,
            )
            .await;
        }
    }

    // Path ids.
    let mut ids = encoded_texts();
    ids.push(("a path climbing out", "..%2F..%2Fhealthz".into()));
    ids.push(("the nil UUID", uuid::Uuid::nil().to_string()));
    for (label, id) in &ids {
        for (method, path, token) in [
            (
                Method::DELETE,
                format!("/users/me/sessions/{id}"),
                &seeded.user_token,
            ),
            (
                Method::POST,
                format!("/admin/users/{id}/disable"),
                &seeded.admin_token,
            ),
            (
                Method::POST,
                format!("/admin/users/{id}/enable"),
                &seeded.admin_token,
            ),
        ] {
            let request = app
                .http
                .request(method.clone(), app.url(&path))
                .bearer_auth(token);
            let template = path.replace(id.as_str(), "{id}");
            probe(
                &format!("{method} {template}, id with {label}"),
                request,
                NOTHING,
            )
            .await;
        }
    }

    // The error names no internal parameter.
    let resp = app
        .http
        .delete(app.url("/users/me/sessions/not-a-uuid"))
        .bearer_auth(&seeded.user_token)
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 400, "invalid_request").await;
    assert_eq!(
        body["error_description"], "malformed path parameter",
        "DELETE /users/me/sessions/not-a-uuid"
    );

    // The admin list's numbers: anything that is not a count the databases hold is a 400.
    let mut numbers: Vec<(&str, String)> = vec![
        ("2^63", "9223372036854775808".into()),
        ("2^64", "18446744073709551616".into()),
        ("-1", "-1".into()),
        ("1.5", "1.5".into()),
        ("true", "true".into()),
    ];
    numbers.extend(encoded_texts());
    for parameter in ["limit", "offset"] {
        for (label, value) in &numbers {
            let url = app.url(&format!("/admin/users?{parameter}={value}"));
            let request = app.http.get(url).bearer_auth(&seeded.admin_token);
            let case = format!("GET /admin/users, {parameter} = {label}");
            probe(&case, request, Expect::Error(400, "invalid_request")).await;
        }
    }
    // The largest offset there is is a page past the end, not an error.
    let resp = app
        .http
        .get(app.url("/admin/users?offset=9223372036854775807"))
        .bearer_auth(&seeded.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /admin/users, offset = 2^63 - 1");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!([]),
        "GET /admin/users, offset = 2^63 - 1"
    );

    // The revocation feed's cursor: a cursor that is not one of ours answers the full live set.
    for (label, since) in encoded_texts() {
        let url = app.url(&format!("/oauth/revocations?since={since}"));
        let request = app
            .http
            .get(url)
            .basic_auth(&seeded.confidential.0, Some(&seeded.confidential.1));
        probe(
            &format!("GET /oauth/revocations, since with {label}"),
            request,
            Expect::Refused(&[200]),
        )
        .await;
    }
}
