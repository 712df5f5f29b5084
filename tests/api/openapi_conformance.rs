//! The OpenAPI document tells the truth: every operation it lists is driven to real answers, successes
//! and failures, and each answer's status must be documented for the operation, its content type
//! documented for that status, and its JSON body valid against the documented schema.
//!
//! The validator is hand-written for the part of OpenAPI 3.0 that poem-openapi emits (`$ref`, `type`,
//! `format`, `nullable`, `required`, `properties`, `additionalProperties`, `items`, `enum`, `allOf`,
//! `oneOf`, `anyOf` and the numeric and length bounds). It is stricter than JSON Schema in two ways that
//! catch drift: a member the schema does not name is an error unless `additionalProperties` allows it,
//! and a keyword it does not know fails the test rather than passing unchecked.

use std::{collections::BTreeSet, num::NonZeroU32};

use portcullis::value::grant_type::GrantType;
use reqwest::{RequestBuilder, header};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, TestUser, claims_of, free_port, password_form, spawn_app,
    spawn_app_with,
};

/// The document, and which operations have been seen answering.
struct Conformance {
    doc: Value,
    seen: BTreeSet<(String, String)>,
}

impl Conformance {
    async fn fetch(app: &TestApp) -> Self {
        let doc = app.get_json("/openapi.json").await;
        Self {
            doc,
            seen: BTreeSet::new(),
        }
    }

    /// Sends a request to the operation `method template`, checks the answer against the document, and
    /// returns its status and JSON body (`null` when it has none).
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        request: RequestBuilder,
    ) -> (u16, Value) {
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        let case = format!("{method} {template} answering {status}");
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{case}: the operation is not documented"
        );
        self.seen
            .insert((method.to_lowercase(), template.to_owned()));
        let responses = &operation["responses"];
        let documented = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{case}: the status is not documented: {body}"));
        let content = documented["content"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if content.is_empty() {
            assert!(
                body.is_empty(),
                "{case}: documented without a body, answered {body}"
            );
            return (status, Value::Null);
        }
        let content_type =
            content_type.unwrap_or_else(|| panic!("{case}: no content type, body {body}"));
        let (_, media) = content
            .iter()
            .find(|(documented, _)| essence(documented) == essence(&content_type))
            .unwrap_or_else(|| {
                panic!(
                    "{case}: served as {content_type}, documented as {:?}",
                    content.keys().collect::<Vec<_>>()
                )
            });
        let value = if essence(&content_type).ends_with("json") {
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {body}"))
        } else {
            Value::String(body)
        };
        let mut errors = Vec::new();
        validate(&self.doc, &media["schema"], &value, "$", &mut errors);
        assert!(
            errors.is_empty(),
            "{case}: the body does not match the document:\n  {}\nbody: {value}",
            errors.join("\n  ")
        );
        (status, value)
    }

    /// [`Self::call`], asserting the status; returns the body.
    async fn expect(
        &mut self,
        method: &str,
        template: &str,
        request: RequestBuilder,
        status: u16,
    ) -> Value {
        let (answered, body) = self.call(method, template, request).await;
        assert_eq!(answered, status, "{method} {template}: {body}");
        body
    }

    /// Every operation of the document was driven.
    fn assert_every_operation_seen(&self) {
        for (path, operations) in self.doc["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                assert!(
                    self.seen.contains(&(method.clone(), path.clone())),
                    "{method} {path} was never driven: add it to this test"
                );
            }
        }
    }
}

/// A media type without its parameters: `application/json; charset=utf-8` is `application/json`.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_ascii_lowercase()
}

/// Checks `value` against `schema`, pushing one line per violation, each with the JSON path it is at.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{at}: the schema is not an object: {schema}"));
        return;
    };
    // OpenAPI 3.0: a `$ref` replaces its siblings.
    if let Some(reference) = schema.get("$ref") {
        let target = reference
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| doc.pointer(pointer));
        match target {
            Some(target) => validate(doc, target, value, at, errors),
            None => errors.push(format!("{at}: unresolvable $ref {reference}")),
        }
        return;
    }
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let fits = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => {
                errors.push(format!("{at}: unknown type {other}"));
                return;
            }
        };
        if !fits {
            errors.push(format!("{at}: {value} is not of type {ty}"));
            return;
        }
    }
    for (keyword, argument) in schema {
        match keyword.as_str() {
            "type"
            | "nullable"
            | "title"
            | "description"
            | "default"
            | "readOnly"
            | "writeOnly"
            | "deprecated"
            | "example"
            | "properties"
            | "additionalProperties" => {}
            "format" => check_format(argument.as_str().unwrap_or_default(), value, at, errors),
            "required" => {
                for name in argument.as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap();
                    if value.get(name).is_none() {
                        errors.push(format!("{at}: the required member `{name}` is missing"));
                    }
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    validate(doc, argument, item, &format!("{at}[{i}]"), errors);
                }
            }
            "enum" => {
                if !argument
                    .as_array()
                    .is_some_and(|allowed| allowed.contains(value))
                {
                    errors.push(format!("{at}: {value} is not one of {argument}"));
                }
            }
            "allOf" => {
                for part in argument.as_array().into_iter().flatten() {
                    validate(doc, part, value, at, errors);
                }
            }
            "oneOf" | "anyOf" => {
                let matching = argument
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|part| {
                        let mut own = Vec::new();
                        validate(doc, part, value, at, &mut own);
                        own.is_empty()
                    })
                    .count();
                if matching == 0 || (keyword == "oneOf" && matching > 1) {
                    errors.push(format!(
                        "{at}: {matching} of the {keyword} schemas match {value}"
                    ));
                }
            }
            "minimum" | "maximum" => {
                let (Some(bound), Some(number)) = (argument.as_f64(), value.as_f64()) else {
                    continue;
                };
                if (keyword == "minimum" && number < bound)
                    || (keyword == "maximum" && number > bound)
                {
                    errors.push(format!("{at}: {value} breaks {keyword} {bound}"));
                }
            }
            "minLength" | "maxLength" => {
                let (Some(bound), Some(text)) = (argument.as_u64(), value.as_str()) else {
                    continue;
                };
                let length = text.chars().count() as u64;
                if (keyword == "minLength" && length < bound)
                    || (keyword == "maxLength" && length > bound)
                {
                    errors.push(format!(
                        "{at}: a string of {length} characters breaks {keyword} {bound}"
                    ));
                }
            }
            other => errors.push(format!(
                "{at}: the validator does not know the keyword `{other}`; teach it"
            )),
        }
    }
    if let Some(members) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, member) in members {
            let at = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => {
                    if property.get("writeOnly") == Some(&Value::Bool(true)) {
                        errors.push(format!("{at}: a writeOnly member is in a response"));
                    }
                    validate(doc, property, member, &at, errors);
                }
                (None, Some(Value::Bool(true))) => {}
                (None, Some(extra)) if extra.is_object() => {
                    validate(doc, extra, member, &at, errors)
                }
                (None, _) => errors.push(format!("{at}: a member the document does not name")),
            }
        }
    }
}

fn check_format(format: &str, value: &Value, at: &str, errors: &mut Vec<String>) {
    let fits = match format {
        "uuid" => value
            .as_str()
            .is_none_or(|s| uuid::Uuid::parse_str(s).is_ok()),
        "date-time" => value
            .as_str()
            .is_none_or(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "int64" => !value.is_number() || value.is_i64(),
        "uint64" => !value.is_number() || value.is_u64(),
        "int32" => {
            value.as_i64().is_none_or(|n| i32::try_from(n).is_ok())
                && (!value.is_number() || value.is_i64())
        }
        "uint32" => {
            value.as_u64().is_none_or(|n| u32::try_from(n).is_ok())
                && (!value.is_number() || value.is_u64())
        }
        "float" | "double" => true,
        other => {
            errors.push(format!(
                "{at}: the validator does not know the format `{other}`; teach it"
            ));
            return;
        }
    };
    if !fits {
        errors.push(format!("{at}: {value} is not a {format}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_operation_is_what_the_openapi_document_says() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut api = Conformance::fetch(&app).await;
    let http = &app.http;
    let url = |path: &str| app.url(path);
    let user = app.seed_user().await;
    let admin = app.seed_admin().await;
    let client = app.seed_client(false, &GrantType::ALL, "profile").await;
    let secret = client.secret.clone().unwrap();
    let resource_server = app.resource_server().await;
    let rs_secret = resource_server.secret.clone().unwrap();

    // Registration: with an email, without one, and refused.
    let register = |body: Value| http.post(url("/users")).json(&body);
    let with_email = api
        .expect(
            "POST",
            "/users",
            register(
                json!({"username": "mailed", "password": PASSWORD, "email": "mailed@example.com"}),
            ),
            201,
        )
        .await;
    assert_eq!(with_email["email"], "mailed@example.com");
    for (body, expected) in [
        (json!({"username": "plain", "password": PASSWORD}), 201),
        (json!({"username": "plain", "password": PASSWORD}), 409),
        (json!({"username": "short", "password": "short"}), 422),
        (json!({"username": 5}), 400),
    ] {
        api.expect("POST", "/users", register(body), expected).await;
    }

    // Tokens: each grant, and refusals.
    let token = |fields: &[(&str, &str)]| {
        http.post(url("/oauth/token"))
            .basic_auth(&client.id, Some(&secret))
            .form(fields)
    };
    let login = api
        .expect(
            "POST",
            "/oauth/token",
            token(&password_form(&user.username, PASSWORD)),
            200,
        )
        .await;
    let refresh = login["refresh_token"].as_str().unwrap();
    let refreshed = api
        .expect(
            "POST",
            "/oauth/token",
            token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]),
            200,
        )
        .await;
    let user_token = refreshed["access_token"].as_str().unwrap().to_owned();
    let client_token = api
        .expect(
            "POST",
            "/oauth/token",
            token(&[("grant_type", "client_credentials")]),
            200,
        )
        .await;
    let client_token = client_token["access_token"].as_str().unwrap().to_owned();
    let huge = "x".repeat(70 * 1024);
    for (fields, expected) in [
        (&password_form(&user.username, "wrong password")[..], 400),
        (&[("grant_type", "magic")], 400),
        (&[("grant_type", "password"), ("password", &huge)], 413),
    ] {
        api.expect("POST", "/oauth/token", token(fields), expected)
            .await;
    }
    api.expect(
        "POST",
        "/oauth/token",
        http.post(url("/oauth/token"))
            .basic_auth("nobody", Some("x"))
            .form(&[("grant_type", "client_credentials")]),
        401,
    )
    .await;

    // Introspection and revocation.
    let introspect = |form: &[(&str, &str)]| {
        http.post(url("/oauth/introspect"))
            .basic_auth(&resource_server.id, Some(&rs_secret))
            .form(form)
    };
    let active = api
        .expect(
            "POST",
            "/oauth/introspect",
            introspect(&[("token", &user_token)]),
            200,
        )
        .await;
    assert_eq!(active["active"], true);
    let inactive = api
        .expect(
            "POST",
            "/oauth/introspect",
            introspect(&[("token", "not-a-token")]),
            200,
        )
        .await;
    assert_eq!(inactive, json!({"active": false}));
    // A public client may not introspect.
    api.expect(
        "POST",
        "/oauth/introspect",
        http.post(url("/oauth/introspect")).form(&[("token", "x")]),
        401,
    )
    .await;
    api.expect(
        "POST",
        "/oauth/introspect",
        introspect(&[("token_type_hint", "x")]),
        400,
    )
    .await;
    let revoke = |secret: &str, form: &[(&str, &str)]| {
        http.post(url("/oauth/revoke"))
            .basic_auth(&client.id, Some(secret))
            .form(form)
    };
    for (secret, form, expected) in [
        (secret.as_str(), &[("token", client_token.as_str())], 200),
        (secret.as_str(), &[("token_type_hint", "x")], 400),
        ("wrong", &[("token", "x")], 401),
    ] {
        api.expect("POST", "/oauth/revoke", revoke(secret, form), expected)
            .await;
    }

    // The revocation feed, now holding the revoked token, and the cached copy.
    let feed = || {
        http.get(url("/oauth/revocations"))
            .basic_auth(&resource_server.id, Some(&rs_secret))
    };
    let resp = feed().send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let entries = api.expect("GET", "/oauth/revocations", feed(), 200).await;
    assert!(!entries["entries"].as_array().unwrap().is_empty());
    api.expect(
        "GET",
        "/oauth/revocations",
        feed().header("if-none-match", &etag),
        304,
    )
    .await;
    api.expect(
        "GET",
        "/oauth/revocations",
        http.get(url("/oauth/revocations")),
        401,
    )
    .await;

    // Discovery.
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        api.call("GET", path, http.get(url(path))).await;
    }
    let jwks = || http.get(url("/.well-known/jwks.json"));
    let resp = jwks().send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    api.call("GET", "/.well-known/jwks.json", jwks()).await;
    api.expect(
        "GET",
        "/.well-known/jwks.json",
        jwks().header("if-none-match", &etag),
        304,
    )
    .await;

    // The caller: with no email, with one, and refused.
    let me = |token: &str| http.get(url("/users/me")).bearer_auth(token);
    let without = api.expect("GET", "/users/me", me(&user_token), 200).await;
    assert_eq!(without["email"], Value::Null, "a user without an email");
    let mailed = app
        .login(&TestUser {
            username: "mailed".into(),
            password: PASSWORD.into(),
        })
        .await;
    let with = api
        .expect("GET", "/users/me", me(&mailed.access_token), 200)
        .await;
    assert_eq!(with["email"], "mailed@example.com");
    api.expect("GET", "/users/me", http.get(url("/users/me")), 401)
        .await;
    let other_client = api
        .expect(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token"))
                .basic_auth(&resource_server.id, Some(&rs_secret))
                .form(&[("grant_type", "client_credentials")]),
            200,
        )
        .await;
    // A client's own token has no user.
    api.expect(
        "GET",
        "/users/me",
        me(other_client["access_token"].as_str().unwrap()),
        403,
    )
    .await;

    // Userinfo: with the openid scope (a client may be granted it at the password grant too), without
    // it, and without a token.
    let oidc = app
        .seed_client(true, &[GrantType::Password], "openid profile email")
        .await;
    let mut form = password_form("mailed", PASSWORD).to_vec();
    form.push(("client_id", oidc.id.as_str()));
    let openid = api
        .expect(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token")).form(&form),
            200,
        )
        .await;
    let openid = openid["access_token"].as_str().unwrap();
    for method in ["GET", "POST"] {
        let userinfo = || http.request(method.parse().unwrap(), url("/oauth/userinfo"));
        let info = api
            .expect(
                method,
                "/oauth/userinfo",
                userinfo().bearer_auth(openid),
                200,
            )
            .await;
        assert_eq!(info["email"], "mailed@example.com");
        api.expect(
            method,
            "/oauth/userinfo",
            userinfo().bearer_auth(&user_token),
            403,
        )
        .await;
        api.expect(method, "/oauth/userinfo", userinfo(), 401).await;
    }

    // Sessions.
    let sessions = api
        .expect(
            "GET",
            "/users/me/sessions",
            http.get(url("/users/me/sessions")).bearer_auth(&user_token),
            200,
        )
        .await;
    let second = app.login(&user).await;
    let sid = claims_of(&second.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sessions.as_array().unwrap().is_empty());
    api.expect(
        "GET",
        "/users/me/sessions",
        http.get(url("/users/me/sessions")),
        401,
    )
    .await;
    let nil = uuid::Uuid::nil().to_string();
    for (id, expected) in [
        (sid.as_str(), 204),
        (nil.as_str(), 404),
        ("not-a-uuid", 400),
    ] {
        api.expect(
            "DELETE",
            "/users/me/sessions/{id}",
            http.delete(url(&format!("/users/me/sessions/{id}")))
                .bearer_auth(&user_token),
            expected,
        )
        .await;
    }

    // Administration.
    let admin_token = app.login(&admin).await.access_token;
    let users = api
        .expect(
            "GET",
            "/admin/users",
            http.get(url("/admin/users")).bearer_auth(&admin_token),
            200,
        )
        .await;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"].is_null()),
        "a user without an email is listed"
    );
    for (query, token, expected) in [
        ("?limit=0", &admin_token, 400),
        ("?offset=-1", &admin_token, 400),
        ("", &user_token, 403),
    ] {
        api.expect(
            "GET",
            "/admin/users",
            http.get(url(&format!("/admin/users{query}")))
                .bearer_auth(token),
            expected,
        )
        .await;
    }
    let victim = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "plain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for action in ["disable", "enable"] {
        let template = format!("/admin/users/{{id}}/{action}");
        for (id, token, expected) in [
            (victim.as_str(), &admin_token, 204),
            (nil.as_str(), &admin_token, 404),
            ("not-a-uuid", &admin_token, 400),
            (victim.as_str(), &user_token, 403),
        ] {
            api.expect(
                "POST",
                &template,
                http.post(url(&format!("/admin/users/{id}/{action}")))
                    .bearer_auth(token),
                expected,
            )
            .await;
        }
    }

    // Account recovery by email: the answers of each operation (the messages themselves are the
    // recovery tests' subject).
    let me_patch = |body: Value| {
        http.patch(url("/users/me"))
            .bearer_auth(&user_token)
            .json(&body)
    };
    api.expect(
        "PATCH",
        "/users/me",
        me_patch(json!({"email": "conformance@example.com"})),
        200,
    )
    .await;
    api.expect(
        "PATCH",
        "/users/me",
        me_patch(json!({"email": "not an address"})),
        422,
    )
    .await;
    let resend = || {
        http.post(url("/users/me/email-verification"))
            .bearer_auth(&user_token)
    };
    api.expect("POST", "/users/me/email-verification", resend(), 202)
        .await;
    for (body, expected) in [
        (json!({"username": "nobody"}), 202),
        (json!({"email": "nobody@example.com"}), 202),
        (json!({}), 400),
    ] {
        api.expect(
            "POST",
            "/users/password-reset",
            http.post(url("/users/password-reset")).json(&body),
            expected,
        )
        .await;
    }
    for path in [
        "/users/password-reset/confirm",
        "/users/email-verification/confirm",
    ] {
        api.expect(
            "POST",
            path,
            http.post(url(path))
                .json(&json!({"token": "unknown", "new_password": "a long new passphrase"})),
            400,
        )
        .await;
    }

    // The password, then logging out everywhere; the second of each is refused, its token revoked.
    let change = |current: &str, new: &str| {
        http.post(url("/users/me/password"))
            .bearer_auth(&user_token)
            .json(&json!({"current_password": current, "new_password": new}))
    };
    for (current, new, expected) in [
        ("wrong password", "a new correct horse", 400),
        (PASSWORD, "short", 422),
        (PASSWORD, "a new correct horse", 204),
        (PASSWORD, "a new correct horse", 401),
    ] {
        api.expect("POST", "/users/me/password", change(current, new), expected)
            .await;
    }
    for expected in [204, 401] {
        api.expect(
            "DELETE",
            "/users/me/sessions",
            http.delete(url("/users/me/sessions"))
                .bearer_auth(&mailed.access_token),
            expected,
        )
        .await;
    }

    // Operations.
    for path in ["/healthz", "/readyz", "/metrics"] {
        api.expect("GET", path, http.get(url(path)), 200).await;
    }

    // A second server whose Redis does not answer and whose limits are tight: 503s and 429s.
    let down = spawn_app_with(Backend::Sqlite, |s| {
        s.redis.url = Some(format!("redis://127.0.0.1:{}/", free_port()));
        s.rate_limit.register_per_ip = NonZeroU32::new(1).unwrap();
        s.rate_limit.login_per_user = NonZeroU32::new(1).unwrap();
    })
    .await;
    let http = &down.http;
    let url = |path: &str| down.url(path);
    let someone = down.seed_user().await;
    api.expect(
        "POST",
        "/users",
        http.post(url("/users"))
            .json(&json!({"username": "another", "password": PASSWORD})),
        429,
    )
    .await;
    let login = || {
        http.post(url("/oauth/token"))
            .form(&password_form(&someone.username, PASSWORD))
    };
    let login_body = api.expect("POST", "/oauth/token", login(), 200).await;
    api.expect("POST", "/oauth/token", login(), 429).await;
    let token = login_body["access_token"].as_str().unwrap();
    for path in ["/users/me", "/users/me/sessions"] {
        // Without the deny list, nothing that gives access is answered.
        api.expect("GET", path, http.get(url(path)).bearer_auth(token), 503)
            .await;
    }
    // Logging out only takes access away: it is checked against the database and answered.
    let request = http.delete(url("/users/me/sessions")).bearer_auth(token);
    api.expect("DELETE", "/users/me/sessions", request, 204)
        .await;
    let rs = down.resource_server().await;
    api.expect(
        "POST",
        "/oauth/introspect",
        http.post(url("/oauth/introspect"))
            .basic_auth(&rs.id, rs.secret.as_deref())
            .form(&[("token", token)]),
        503,
    )
    .await;
    let ready = api
        .expect("GET", "/readyz", http.get(url("/readyz")), 503)
        .await;
    assert_eq!(ready["checks"]["redis"], json!("down"));

    api.assert_every_operation_seen();
}
