//! `GET /.well-known/jwks.json`: the exact shape, caching headers, the `304` path, and the edge's answer
//! against the documented operation's.

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

    // The edge answers a `GET` itself; a `HEAD` goes through the documented operation. Both must say
    // the same, and the edge's answers must still be counted.
    async fn the_edge_and_the_documented_operation_answer_alike(backend: Backend) {
        let app = spawn_app(backend).await;
        let url = app.url("/.well-known/jwks.json");
        let etag = app.http.get(&url).send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
        for if_none_match in ["\"stale\"", etag.as_str()] {
            let get = app.http.get(&url).header("if-none-match", if_none_match).send().await.unwrap();
            let head = app.http.head(&url).header("if-none-match", if_none_match).send().await.unwrap();
            assert_eq!(get.status(), head.status(), "If-None-Match: {if_none_match}");
            for name in ["etag", "cache-control", "content-type", "x-content-type-options"] {
                assert_eq!(get.headers().get(name), head.headers().get(name), "{name}, If-None-Match: {if_none_match}");
            }
        }

        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let counted = |status: &str| {
            let series = format!(r#"portcullis_http_requests_total{{route="/.well-known/jwks.json",method="GET",status="{status}"}} "#);
            metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map(|v| v.parse::<f64>().unwrap())
        };
        assert_eq!(counted("200"), Some(2.0));
        assert_eq!(counted("304"), Some(1.0));
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
