//! `GET /.well-known/jwks.json`: the exact shape, caching headers, and the `304` path.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

on_both_databases! {
    async fn the_jwks_has_the_contract_shape_and_cache_headers(backend: Backend) {
        let app = spawn_app(backend).await;

        let resp = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();

        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10, "a strong ETag: {etag}");
        let jwks: Value = resp.json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys[0].as_object().unwrap();
        let mut names: Vec<&str> = key.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["e"], "AQAB");
        let kid = portcullis::keys::thumbprint(key["n"].as_str().unwrap(), key["e"].as_str().unwrap());
        assert_eq!(key["kid"], kid.as_str(), "kid is the RFC 7638 thumbprint");
    }

    async fn if_none_match_with_the_current_etag_gets_304_and_no_body(backend: Backend) {
        let app = spawn_app(backend).await;
        let first = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let body = first.bytes().await.unwrap();

        let cached = app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()["etag"], etag.as_str());
        assert_eq!(cached.headers()["cache-control"], "public, max-age=300");
        assert!(cached.bytes().await.unwrap().is_empty());

        let listed = app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", format!("\"other\", {etag}")).send().await.unwrap();
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);

        let stale = app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", "\"stale\"").send().await.unwrap();
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(stale.bytes().await.unwrap(), body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_the_same_keys_serve_the_same_bytes_and_etag() {
    let a = spawn_app(Backend::Sqlite).await;
    let b = spawn_app(Backend::Sqlite).await;
    let fetch =
        |app: &crate::helpers::TestApp| app.http.get(app.url("/.well-known/jwks.json")).send();
    let (ra, rb) = (fetch(&a).await.unwrap(), fetch(&b).await.unwrap());
    assert_eq!(ra.headers()["etag"], rb.headers()["etag"]);
    assert_eq!(ra.bytes().await.unwrap(), rb.bytes().await.unwrap());
}
