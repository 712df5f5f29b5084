//! What resource servers and services rely on: key rotation without downtime, discovery metadata,
//! client_credentials, and the revocation feed.

use std::time::Duration;

use portcullis::{
    oauth::client::hash_secret,
    ports::NewClient,
    store::clients::CACHE_TTL,
    value::{grant_type::GrantType, scope::Scope},
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Backend, TestApp, TestClient, TokenBody, assert_error, listen_at_issuer, own_key_dir,
    spawn_app_with,
};

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks = app.get_json("/.well-known/jwks.json").await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` every 100 ms for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {secs} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_the_server_running_publishes_first_signs_later_and_prunes_only_dead_keys()
{
    // Arrange: the current key is an hour old; a new one is published 2 s before it signs; tokens live 6 s.
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.publish_ahead = Some(2);
        s.keys.rescan_interval = 1;
        s.tokens.access_ttl = 6;
    })
    .await;
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let old = app.login(&user).await.access_token;
    let old_kid = kid_of(&old);
    let (ahead, ttl) = (Duration::from_secs(2), Duration::from_secs(6));

    // Act: rotate.
    let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();

    // Assert: the next key is published before any token carries it.
    eventually(3, "the next key in the JWKS", || async {
        published_kids(&app).await.contains(&new_kid)
    })
    .await;
    let meanwhile = app.login(&user).await.access_token;
    assert_eq!(
        kid_of(&meanwhile),
        old_kid,
        "the new key does not sign before its pre-publication"
    );
    // Once published long enough it signs; the old key's tokens still verify.
    eventually(5, "the new key signing", || async {
        kid_of(&app.login(&user).await.access_token) == new_kid
    })
    .await;
    assert!(
        app.is_active(&rs, &old).await,
        "a token of the retiring key is still good"
    );
    assert!(published_kids(&app).await.contains(&old_kid));
    let states: Vec<_> = portcullis::keys::inventory(&path, ahead, ttl)
        .unwrap()
        .keys
        .into_iter()
        .map(|(k, s)| (k.kid.clone(), s))
        .collect();
    assert!(
        states.contains(&(old_kid.clone(), portcullis::keys::KeyState::Retiring)),
        "{states:?}"
    );
    assert!(
        portcullis::keys::prune(&path, ahead, ttl)
            .unwrap()
            .0
            .is_empty(),
        "prune keeps a key that can verify a live token"
    );

    // Once every token it signed has expired, prune removes it and it leaves the JWKS.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (removed, _) = portcullis::keys::prune(&path, ahead, ttl).unwrap();
    assert_eq!(
        removed.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        [old_kid.as_str()]
    );
    eventually(3, "the old key leaving the JWKS", || async {
        published_kids(&app).await == [new_kid.clone()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_out_of_the_folder_stops_verifying_its_tokens_at_the_next_rescan() {
    // Arrange: a live token, verified once (and so remembered), and a second key beside its own.
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.publish_ahead = Some(0);
        s.keys.rescan_interval = 1;
    })
    .await;
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let token = app.login(&user).await.access_token;
    assert!(app.is_active(&rs, &token).await);
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    let (new_path, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();

    // Act: the operator withdraws the token's key, as after a leak.
    for entry in std::fs::read_dir(&path).unwrap() {
        let old = entry.unwrap().path();
        if old != new_path {
            std::fs::remove_file(old).unwrap();
        }
    }
    eventually(3, "the old key leaving the JWKS", || async {
        published_kids(&app).await == [new_kid.clone()]
    })
    .await;

    // Assert
    assert!(!app.is_active(&rs, &token).await);
    assert_error(app.me(&token).await, 401, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_key_folder_agree_after_a_rotation_and_sighup() {
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    // No periodic rescan during the test: only SIGHUP can make them see the new key.
    let a = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.rescan_interval = 3600;
    })
    .await;
    let b = a.another_instance().await;
    let etag = |app: &TestApp| {
        let req = app.http.get(app.url("/.well-known/jwks.json"));
        async move {
            req.send().await.unwrap().headers()["etag"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let before = etag(&a).await;
    assert_eq!(before, etag(&b).await);

    let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    eventually(3, "both instances rescanning", || async {
        published_kids(&a).await.contains(&new_kid) && published_kids(&b).await.contains(&new_kid)
    })
    .await;
    let (ea, eb) = (etag(&a).await, etag(&b).await);
    assert_eq!(ea, eb);
    assert_ne!(ea, before);
    let body = |app: &TestApp| app.http.get(app.url("/.well-known/jwks.json")).send();
    assert_eq!(
        body(&a).await.unwrap().bytes().await.unwrap(),
        body(&b).await.unwrap().bytes().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_has_the_rfc_8414_fields_and_every_url_resolves() {
    let app = spawn_app_with(Backend::Sqlite, listen_at_issuer).await;
    let issuer = app.settings.issuer();

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            resp.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public")
        );
        let meta: Value = resp.json().await.unwrap();
        assert_eq!(meta["issuer"], issuer.as_str());
        let strings = |field: &str| -> Vec<String> {
            meta[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            strings("grant_types_supported"),
            ["password", "refresh_token", "client_credentials"]
        );
        for field in [
            "token_endpoint_auth_methods_supported",
            "revocation_endpoint_auth_methods_supported",
        ] {
            assert_eq!(
                strings(field),
                ["client_secret_basic", "client_secret_post", "none"],
                "{field}"
            );
        }
        assert_eq!(
            strings("introspection_endpoint_auth_methods_supported"),
            ["client_secret_basic", "client_secret_post"]
        );
        assert!(strings("scopes_supported").contains(&"profile".to_owned()));
        assert!(meta["response_types_supported"].is_array());
        assert_eq!(strings("subject_types_supported"), ["public"]);
        assert_eq!(strings("id_token_signing_alg_values_supported"), ["RS256"]);
        // Every URL is derived from the issuer and answers here (no 404).
        for (field, method) in [
            ("token_endpoint", "POST"),
            ("jwks_uri", "GET"),
            ("revocation_endpoint", "POST"),
            ("introspection_endpoint", "POST"),
            ("service_documentation", "GET"),
            ("revocation_feed_endpoint", "GET"),
        ] {
            let url = meta[field].as_str().unwrap();
            assert!(url.starts_with(&issuer), "{field}: {url}");
            let resp = app
                .http
                .request(method.parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            assert_ne!(resp.status(), StatusCode::NOT_FOUND, "{field}");
            assert!(resp.status().as_u16() < 500, "{field}");
        }
    }
}

async fn client_credentials(
    app: &TestApp,
    client: &TestClient,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    app.token_basic(&client.id, client.secret.as_deref().unwrap_or(""), &form)
        .await
}

on_both_databases! {
    async fn client_credentials_issues_a_token_for_the_client_itself(backend: Backend) {
        let app = spawn_app_with(backend, |_| {}).await;
        let rs = app.resource_server().await;
        let service = app.seed_client(false, &[GrantType::ClientCredentials], "orders.read orders.write admin").await;

        let resp = client_credentials(&app, &service, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let token: TokenBody = resp.json().await.unwrap();
        assert!(token.refresh_token.is_none(), "no refresh token (RFC 6749 §4.4.3)");
        assert_eq!(token.scope, "orders.read orders.write", "every allowed scope but admin, a user's privilege");
        let intro: Value = app.introspect(&rs, &token.access_token).await.json().await.unwrap();
        assert_eq!(intro["active"], true);
        assert_eq!(intro["sub"], service.id.as_str());
        assert_eq!(intro["client_id"], service.id.as_str());
        assert!(intro["username"].is_null() && intro["sid"].is_null());
        // A client's own token is not a user's.
        assert_error(app.me(&token.access_token).await, 403, "insufficient_scope").await;

        let narrowed: TokenBody = client_credentials(&app, &service, Some("orders.read")).await.json().await.unwrap();
        assert_eq!(narrowed.scope, "orders.read");
        assert_eq!(app.count("sessions").await, 0);
    }

    async fn client_credentials_refuses_public_clients_other_grants_and_other_scopes(backend: Backend) {
        let app = spawn_app_with(backend, |_| {}).await;
        let public = app.seed_client(true, &[GrantType::ClientCredentials], "profile").await;
        let no_grant = app.seed_client(false, &[GrantType::Password], "profile").await;
        let service = app.seed_client(false, &[GrantType::ClientCredentials], "orders.read").await;

        let resp = app.token(&[("grant_type", "client_credentials"), ("client_id", public.id.as_str())]).await;
        assert_error(resp, 400, "unauthorized_client").await;
        assert_error(app.token(&[("grant_type", "client_credentials")]).await, 400, "unauthorized_client").await;
        assert_error(client_credentials(&app, &no_grant, None).await, 400, "unauthorized_client").await;
        assert_error(client_credentials(&app, &service, Some("orders.write")).await, 400, "invalid_scope").await;
        assert_error(client_credentials(&app, &service, Some("admin")).await, 400, "invalid_scope").await;
        let wrong = TestClient { id: service.id.clone(), secret: Some("wrong".into()) };
        assert_error(client_credentials(&app, &wrong, None).await, 401, "invalid_client").await;
    }

    async fn a_deleted_client_gets_no_client_credentials_token_once_its_row_is_a_second_old(backend: Backend) {
        // Arrange: a token issued, so the client's row is in the server's client cache.
        let app = spawn_app_with(backend, |_| {}).await;
        let service = app.seed_client(false, &[GrantType::ClientCredentials], "orders.read").await;
        assert_eq!(client_credentials(&app, &service, None).await.status(), StatusCode::OK);

        // Act
        assert!(app.state.revoker.delete_client(&service.id).await.unwrap());
        tokio::time::sleep(CACHE_TTL + Duration::from_millis(100)).await;

        // Assert
        assert_error(client_credentials(&app, &service, None).await, 401, "invalid_client").await;
    }

    async fn a_client_made_again_with_a_new_secret_is_known_by_it_at_once(backend: Backend) {
        // Arrange: the client's row cached with its first secret.
        let app = spawn_app_with(backend, |_| {}).await;
        let first = app.seed_client(false, &[GrantType::ClientCredentials], "orders.read").await;
        assert_eq!(client_credentials(&app, &first, None).await.status(), StatusCode::OK);

        // Act: deleted and made again under its id with a new secret, as an operator replaces a leaked one.
        assert!(app.state.revoker.delete_client(&first.id).await.unwrap());
        let second = TestClient { id: first.id.clone(), secret: Some(format!("secret-{}", uuid::Uuid::new_v4().simple())) };
        app.state.clients.create(NewClient {
            id: &second.id,
            secret_hash: second.secret.as_deref().map(hash_secret),
            grant_types: &[GrantType::ClientCredentials],
            scopes: &Scope::parse("orders.read").unwrap(),
        }).await.unwrap();

        // Assert: the new secret works at once, and the old one is refused from then on.
        assert_eq!(client_credentials(&app, &second, None).await.status(), StatusCode::OK);
        assert_error(client_credentials(&app, &first, None).await, 401, "invalid_client").await;
    }

    async fn the_feed_lists_revocations_after_a_cursor_with_an_etag_and_drops_expired_ones(backend: Backend) {
        // Arrange: access tokens live 2 s, so entries expire quickly.
        let app = spawn_app_with(backend, |s| s.tokens.access_ttl = 2).await;
        let rs = app.resource_server().await;
        let feed = |since: Option<&str>, etag: Option<&str>| {
            let mut req = app.http.get(app.url("/oauth/revocations")).basic_auth(&rs.id, rs.secret.as_deref());
            if let Some(since) = since {
                req = req.query(&[("since", since)]);
            }
            if let Some(etag) = etag {
                req = req.header("if-none-match", etag);
            }
            req.send()
        };
        let user = app.seed_user().await;
        let first = app.login(&user).await;
        let second = app.login(&user).await;

        // An empty feed.
        let empty: Value = feed(None, None).await.unwrap().json().await.unwrap();
        assert_eq!(empty["entries"], serde_json::json!([]));
        let start = empty["cursor"].as_str().unwrap().to_owned();

        // Act: revoke an access token, then log a session out.
        app.http.post(app.url("/oauth/revoke")).form(&[("token", first.access_token.as_str())]).send().await.unwrap();
        let resp = feed(Some(&start), None).await.unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let page: Value = resp.json().await.unwrap();
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let claims: Value = {
            use base64::Engine;
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first.access_token.split('.').nth(1).unwrap()).unwrap()).unwrap()
        };
        assert_eq!(entries[0]["kind"], "jti");
        assert_eq!(entries[0]["value"], claims["jti"]);
        assert_eq!(entries[0]["expires_at"], claims["exp"]);
        // The same question, the same ETag; with it, 304.
        assert_eq!(feed(Some(&start), Some(&etag)).await.unwrap().status(), StatusCode::NOT_MODIFIED);

        let cursor = page["cursor"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url("/users/me/sessions")).bearer_auth(&second.access_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let next: Value = feed(Some(&cursor), None).await.unwrap().json().await.unwrap();
        let kinds: Vec<&str> = next["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"sub") && kinds.contains(&"sid"), "{kinds:?}");
        assert!(!kinds.contains(&"jti"), "nothing from before the cursor");
        let sub = next["entries"].as_array().unwrap().iter().find(|e| e["kind"] == "sub").unwrap();
        assert!(sub["not_before"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap());
        // An unknown cursor answers the full live set.
        let all: Value = feed(Some("99999999"), None).await.unwrap().json().await.unwrap();
        assert_eq!(all["entries"].as_array().unwrap().len(), kinds.len() + 1);

        // Expired entries drop out.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later: Value = feed(None, None).await.unwrap().json().await.unwrap();
        assert_eq!(later["entries"], serde_json::json!([]));
        let purged = portcullis::store::housekeeping::purge(&app.state.db, chrono::Utc::now(), app.state.settings.access_ttl()).await.unwrap();
        assert_eq!(purged.revocations as usize, kinds.len() + 1);

        // Only confidential clients, by HTTP Basic.
        assert_error(app.http.get(app.url("/oauth/revocations")).send().await.unwrap(), 401, "invalid_client").await;
    }
}
