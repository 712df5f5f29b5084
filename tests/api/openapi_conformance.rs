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

use crate::helpers::{Backend, PASSWORD, TestApp, free_port, spawn_app, spawn_app_with};

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
    let (_, with_email) = api
        .call(
            "POST",
            "/users",
            http.post(url("/users")).json(
                &json!({"username": "mailed", "password": PASSWORD, "email": "mailed@example.com"}),
            ),
        )
        .await;
    assert_eq!(with_email["email"], "mailed@example.com");
    let (status, _) = api
        .call(
            "POST",
            "/users",
            http.post(url("/users"))
                .json(&json!({"username": "plain", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201);
    for (body, expected) in [
        (json!({"username": "plain", "password": PASSWORD}), 409),
        (json!({"username": "short", "password": "short"}), 422),
        (json!({"username": 5}), 400),
    ] {
        let (status, _) = api
            .call("POST", "/users", http.post(url("/users")).json(&body))
            .await;
        assert_eq!(status, expected, "{body}");
    }

    // Tokens: each grant, and refusals.
    let form = |fields: &[(&str, &str)]| -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let token = |fields: Vec<(String, String)>| {
        http.post(url("/oauth/token"))
            .basic_auth(&client.id, Some(&secret))
            .form(&fields)
    };
    let (status, login) = api
        .call(
            "POST",
            "/oauth/token",
            token(form(&[
                ("grant_type", "password"),
                ("username", &user.username),
                ("password", PASSWORD),
            ])),
        )
        .await;
    assert_eq!(status, 200);
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let (status, refreshed) = api
        .call(
            "POST",
            "/oauth/token",
            token(form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
            ])),
        )
        .await;
    assert_eq!(status, 200);
    let user_token = refreshed["access_token"].as_str().unwrap().to_owned();
    let (status, client_token) = api
        .call(
            "POST",
            "/oauth/token",
            token(form(&[("grant_type", "client_credentials")])),
        )
        .await;
    assert_eq!(status, 200);
    let client_token = client_token["access_token"].as_str().unwrap().to_owned();
    for (fields, expected) in [
        (
            form(&[
                ("grant_type", "password"),
                ("username", &user.username),
                ("password", "wrong password"),
            ]),
            400,
        ),
        (form(&[("grant_type", "magic")]), 400),
        (
            form(&[
                ("grant_type", "password"),
                ("password", &"x".repeat(70 * 1024)),
            ]),
            413,
        ),
    ] {
        let (status, _) = api.call("POST", "/oauth/token", token(fields)).await;
        assert_eq!(status, expected);
    }
    let (status, _) = api
        .call(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token"))
                .basic_auth("nobody", Some("x"))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
    assert_eq!(status, 401);

    // Introspection and revocation.
    let introspect = |token: &str| {
        http.post(url("/oauth/introspect"))
            .basic_auth(&resource_server.id, Some(&rs_secret))
            .form(&[("token", token)])
    };
    let (_, active) = api
        .call("POST", "/oauth/introspect", introspect(&user_token))
        .await;
    assert_eq!(active["active"], true);
    let (_, inactive) = api
        .call("POST", "/oauth/introspect", introspect("not-a-token"))
        .await;
    assert_eq!(inactive, json!({"active": false}));
    let (status, _) = api
        .call(
            "POST",
            "/oauth/introspect",
            http.post(url("/oauth/introspect")).form(&[("token", "x")]),
        )
        .await;
    assert_eq!(status, 401, "a public client may not introspect");
    let (status, _) = api
        .call(
            "POST",
            "/oauth/introspect",
            http.post(url("/oauth/introspect"))
                .basic_auth(&resource_server.id, Some(&rs_secret))
                .form(&[("token_type_hint", "x")]),
        )
        .await;
    assert_eq!(status, 400);
    let revoke = || {
        http.post(url("/oauth/revoke"))
            .basic_auth(&client.id, Some(&secret))
    };
    let (status, _) = api
        .call(
            "POST",
            "/oauth/revoke",
            revoke().form(&[("token", client_token.as_str())]),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            "POST",
            "/oauth/revoke",
            revoke().form(&[("token_type_hint", "x")]),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(
            "POST",
            "/oauth/revoke",
            http.post(url("/oauth/revoke"))
                .basic_auth(&client.id, Some("wrong"))
                .form(&[("token", "x")]),
        )
        .await;
    assert_eq!(status, 401);

    // The revocation feed, now holding the revoked token, and the cached copy.
    let feed = || {
        http.get(url("/oauth/revocations"))
            .basic_auth(&resource_server.id, Some(&rs_secret))
    };
    let resp = feed().send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let (_, entries) = api.call("GET", "/oauth/revocations", feed()).await;
    assert!(!entries["entries"].as_array().unwrap().is_empty());
    let (status, _) = api
        .call(
            "GET",
            "/oauth/revocations",
            feed().header("if-none-match", &etag),
        )
        .await;
    assert_eq!(status, 304);
    let (status, _) = api
        .call(
            "GET",
            "/oauth/revocations",
            http.get(url("/oauth/revocations")),
        )
        .await;
    assert_eq!(status, 401);

    // Discovery.
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        api.call("GET", path, http.get(url(path))).await;
    }
    let resp = http
        .get(url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    api.call(
        "GET",
        "/.well-known/jwks.json",
        http.get(url("/.well-known/jwks.json")),
    )
    .await;
    let (status, _) = api
        .call(
            "GET",
            "/.well-known/jwks.json",
            http.get(url("/.well-known/jwks.json"))
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(status, 304);

    // The caller: with no email, with one, and refused.
    let (_, me) = api
        .call(
            "GET",
            "/users/me",
            http.get(url("/users/me")).bearer_auth(&user_token),
        )
        .await;
    assert_eq!(me["email"], Value::Null, "a user without an email");
    let mailed = app
        .login(&crate::helpers::TestUser {
            username: "mailed".into(),
            password: PASSWORD.into(),
        })
        .await;
    let (_, me) = api
        .call(
            "GET",
            "/users/me",
            http.get(url("/users/me")).bearer_auth(&mailed.access_token),
        )
        .await;
    assert_eq!(me["email"], "mailed@example.com");
    let (status, _) = api
        .call("GET", "/users/me", http.get(url("/users/me")))
        .await;
    assert_eq!(status, 401);
    let (_, other_client) = api
        .call(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token"))
                .basic_auth(&resource_server.id, Some(&rs_secret))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
    let (status, _) = api
        .call(
            "GET",
            "/users/me",
            http.get(url("/users/me"))
                .bearer_auth(other_client["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 403, "a client's own token has no user");

    // Sessions.
    let (_, sessions) = api
        .call(
            "GET",
            "/users/me/sessions",
            http.get(url("/users/me/sessions")).bearer_auth(&user_token),
        )
        .await;
    let second = app.login(&user).await;
    let sid = crate::helpers::claims_of(&second.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!sessions.as_array().unwrap().is_empty());
    let (status, _) = api
        .call(
            "GET",
            "/users/me/sessions",
            http.get(url("/users/me/sessions")),
        )
        .await;
    assert_eq!(status, 401);
    let one = "/users/me/sessions/{id}";
    for (id, expected) in [
        (sid.as_str(), 204),
        (&uuid::Uuid::nil().to_string(), 404),
        ("not-a-uuid", 400),
    ] {
        let (status, _) = api
            .call(
                "DELETE",
                one,
                http.delete(url(&format!("/users/me/sessions/{id}")))
                    .bearer_auth(&user_token),
            )
            .await;
        assert_eq!(status, expected, "{id}");
    }

    // Administration.
    let admin_token = app.login(&admin).await.access_token;
    let (_, users) = api
        .call(
            "GET",
            "/admin/users",
            http.get(url("/admin/users")).bearer_auth(&admin_token),
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
        let (status, _) = api
            .call(
                "GET",
                "/admin/users",
                http.get(url(&format!("/admin/users{query}")))
                    .bearer_auth(token),
            )
            .await;
        assert_eq!(status, expected, "{query}");
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
            (&uuid::Uuid::nil().to_string(), &admin_token, 404),
            ("not-a-uuid", &admin_token, 400),
            (victim.as_str(), &user_token, 403),
        ] {
            let (status, _) = api
                .call(
                    "POST",
                    &template,
                    http.post(url(&format!("/admin/users/{id}/{action}")))
                        .bearer_auth(token),
                )
                .await;
            assert_eq!(status, expected, "{action} {id}");
        }
    }

    // The password, then logging out everywhere.
    let change = |current: &str, new: &str| {
        http.post(url("/users/me/password"))
            .bearer_auth(&user_token)
            .json(&json!({"current_password": current, "new_password": new}))
    };
    for (current, new, expected) in [
        ("wrong password", "a new correct horse", 400),
        (PASSWORD, "short", 422),
    ] {
        let (status, _) = api
            .call("POST", "/users/me/password", change(current, new))
            .await;
        assert_eq!(status, expected);
    }
    let (status, _) = api
        .call(
            "POST",
            "/users/me/password",
            change(PASSWORD, "a new correct horse"),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(
            "POST",
            "/users/me/password",
            change(PASSWORD, "a new correct horse"),
        )
        .await;
    assert_eq!(status, 401, "the change revoked the token");
    let (status, _) = api
        .call(
            "DELETE",
            "/users/me/sessions",
            http.delete(url("/users/me/sessions"))
                .bearer_auth(&mailed.access_token),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(
            "DELETE",
            "/users/me/sessions",
            http.delete(url("/users/me/sessions"))
                .bearer_auth(&mailed.access_token),
        )
        .await;
    assert_eq!(status, 401);

    // Operations.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = api.call("GET", path, http.get(url(path))).await;
        assert_eq!(status, 200, "{path}");
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
    let (status, _) = api
        .call(
            "POST",
            "/users",
            http.post(url("/users"))
                .json(&json!({"username": "another", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 429);
    let (status, login) = api
        .call(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token")).form(&[
                ("grant_type", "password"),
                ("username", &someone.username),
                ("password", PASSWORD),
            ]),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let (status, _) = api
        .call(
            "POST",
            "/oauth/token",
            http.post(url("/oauth/token")).form(&[
                ("grant_type", "password"),
                ("username", &someone.username),
                ("password", PASSWORD),
            ]),
        )
        .await;
    assert_eq!(status, 429);
    let token = login["access_token"].as_str().unwrap();
    for (method, path) in [("GET", "/users/me"), ("GET", "/users/me/sessions")] {
        let request = http
            .request(method.parse().unwrap(), url(path))
            .bearer_auth(token);
        let (status, _) = api.call(method, path, request).await;
        assert_eq!(status, 503, "{method} {path} without the deny list");
    }
    // Logging out only takes access away: it is checked against the database and answered.
    let request = http.delete(url("/users/me/sessions")).bearer_auth(token);
    let (status, _) = api.call("DELETE", "/users/me/sessions", request).await;
    assert_eq!(
        status, 204,
        "DELETE /users/me/sessions without the deny list"
    );
    let rs = down.resource_server().await;
    let (status, _) = api
        .call(
            "POST",
            "/oauth/introspect",
            http.post(url("/oauth/introspect"))
                .basic_auth(&rs.id, rs.secret.as_deref())
                .form(&[("token", token)]),
        )
        .await;
    assert_eq!(status, 503);
    let (status, ready) = api.call("GET", "/readyz", http.get(url("/readyz"))).await;
    assert_eq!((status, &ready["checks"]["redis"]), (503, &json!("down")));

    api.assert_every_operation_seen();
}
