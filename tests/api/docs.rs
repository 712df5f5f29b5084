//! The OpenAPI document and Swagger UI are generated from the code and describe all of it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_operation_and_both_security_schemes() {
    let app = spawn_app(Backend::Sqlite).await;

    let resp = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/oauth/token", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/users", "post"),
        ("/users/me", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/oauth/revoke", "post"),
        ("/oauth/introspect", "post"),
        ("/users/me/sessions", "get"),
        ("/users/me/sessions", "delete"),
        ("/users/me/sessions/{id}", "delete"),
        ("/users/me/password", "post"),
        ("/admin/users", "get"),
        ("/admin/users/{id}/disable", "post"),
        ("/admin/users/{id}/enable", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(op["summary"].is_string(), "{method} {path} has a summary");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["OAuth2"]["type"], "oauth2");
    assert_eq!(
        schemes["OAuth2"]["flows"]["password"]["tokenUrl"],
        "/oauth/token"
    );
    assert!(schemes["OAuth2"]["flows"]["password"]["scopes"]["admin"].is_string());
    assert_eq!(schemes["Bearer"]["type"], "http");
    assert_eq!(schemes["Bearer"]["scheme"], "bearer");
    let security = doc["paths"]["/users/me"]["get"]["security"].to_string();
    assert!(
        security.contains("OAuth2") && security.contains("Bearer"),
        "{security}"
    );

    // Every operation that can fail documents how, in the error envelope.
    let documented = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for status in ["200", "400", "401", "413", "429", "503"] {
        assert!(
            documented("/oauth/token", "post").contains(&status.to_owned()),
            "token {status}"
        );
    }
    for status in ["201", "400", "409", "422"] {
        assert!(
            documented("/users", "post").contains(&status.to_owned()),
            "register {status}"
        );
    }
    for status in ["200", "401", "403"] {
        assert!(
            documented("/users/me", "get").contains(&status.to_owned()),
            "me {status}"
        );
    }
    for status in ["200", "400", "401", "503"] {
        assert!(
            documented("/oauth/introspect", "post").contains(&status.to_owned()),
            "introspect {status}"
        );
    }
    for status in ["204", "401", "403", "404", "503"] {
        assert!(
            documented("/admin/users/{id}/disable", "post").contains(&status.to_owned()),
            "disable {status}"
        );
    }
    for status in ["200", "304"] {
        assert!(
            documented("/.well-known/jwks.json", "get").contains(&status.to_owned()),
            "jwks {status}"
        );
    }
    let error_schema = &doc["paths"]["/oauth/token"]["post"]["responses"]["400"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(error_schema, "#/components/schemas/ErrorBody");
    // Secrets are write-only in the request schemas.
    assert_eq!(
        doc["components"]["schemas"]["TokenForm"]["properties"]["password"]["writeOnly"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_at_docs_with_its_oauth_receiver() {
    let app = spawn_app(Backend::Sqlite).await;

    let page = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    let receiver = app
        .http
        .get(app.url("/docs/oauth-receiver.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(receiver.status(), StatusCode::OK);
}
