//! `POST /oauth/introspect` (RFC 7662): its fields, its `active:false` cases, and who may call it.

use portcullis::value::grant_type::GrantType;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Deny, assert_error, spawn_app, spawn_app_on, spawn_app_with};

on_every_backend! {
    async fn a_live_token_is_active_with_every_field(backend: Backend, deny: Deny) {
        let app = spawn_app_on(backend, deny).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;

        let resp = app.introspect(&rs, &token).await;

        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let got: Value = resp.json().await.unwrap();
        assert_eq!(got["active"], true);
        for field in ["scope", "client_id", "username", "token_type", "exp", "iat", "nbf", "sub", "aud", "iss", "jti"] {
            assert!(!got[field].is_null(), "{field} in {got}");
        }
        assert_eq!(got["username"], user.username.as_str());
        assert_eq!(got["token_type"], "Bearer");
        assert_eq!(got["client_id"], app.settings.clients.default_client_id.as_str());
        assert_eq!(got["scope"], "profile");
        assert_eq!(got["iss"], "http://127.0.0.1:8080");
        assert_eq!(got["aud"], "portcullis");
    }

    async fn inactive_tokens_say_only_active_false(backend: Backend, deny: Deny) {
        // Arrange: a revoked token and a disabled user's, each introspected while it was live, so that a
        // verification remembered from then cannot answer for it. They live for the default 15 minutes:
        // only the revocation can make them inactive here.
        let app = spawn_app_on(backend, deny).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let revoked = app.login(&user).await.access_token;
        let admin = app.seed_admin().await;
        let admin_token = app.login(&admin).await.access_token;
        let victim = app.seed_user().await;
        let victim_token = app.login(&victim).await;
        for token in [&revoked, &victim_token.access_token] {
            assert!(app.is_active(&rs, token).await);
        }
        app.revoke(&revoked).await;
        let victim_id = app.state.users.find_by_username(&victim.username).await.unwrap().unwrap().id;
        let resp = app.http.post(app.url(&format!("/admin/users/{victim_id}/disable"))).bearer_auth(&admin_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);

        // Act + Assert
        for (case, token) in [
            ("revoked", revoked.as_str()),
            ("disabled user", victim_token.access_token.as_str()),
            ("garbage", "garbage"),
            ("a refresh token", victim_token.refresh_token.as_deref().unwrap()),
        ] {
            let got: Value = app.introspect(&rs, token).await.json().await.unwrap();
            assert_eq!(got, serde_json::json!({"active": false}), "{case}");
        }
    }
}

on_both_databases! {
    async fn a_users_token_is_active_exactly_while_the_users_row_says_enabled(backend: Backend) {
        // Arrange: a user's token, introspected while live. The row is then edited by hand, so that
        // nothing but the row itself (no deny-list entry, no revocation) can make the token inactive.
        let app = spawn_app(backend).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        assert!(app.is_active(&rs, &token).await);

        // Act + Assert: inactive while disabled, active again once enabled.
        app.disable_in_database(&user).await;
        assert!(!app.is_active(&rs, &token).await);
        app.enable_in_database(&user).await;
        assert!(app.is_active(&rs, &token).await);
    }

    async fn a_token_seen_active_is_refused_once_it_expires(backend: Backend) {
        // Arrange: tokens live one second; this one is introspected (and so remembered) while live.
        let app = spawn_app_with(backend, |s| s.tokens.access_ttl = 1).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        assert!(app.is_active(&rs, &token).await);
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);

        // Act: past `exp` (the server's clock, no leeway).
        app.clock.advance(std::time::Duration::from_secs(2));

        // Assert
        let got: Value = app.introspect(&rs, &token).await.json().await.unwrap();
        assert_eq!(got, serde_json::json!({"active": false}));
        assert_error(app.me(&token).await, 401, "invalid_token").await;
    }

    async fn only_confidential_clients_may_introspect(backend: Backend) {
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        let public = app.seed_client(true, &[GrantType::Password], "profile").await;

        let by_public = app.http.post(app.url("/oauth/introspect")).form(&[("token", token.as_str()), ("client_id", public.id.as_str())]).send().await.unwrap();
        assert_error(by_public, 401, "invalid_client").await;
        let by_nobody = app.http.post(app.url("/oauth/introspect")).form(&[("token", token.as_str())]).send().await.unwrap();
        assert_error(by_nobody, 401, "invalid_client").await;
        let wrong_secret = app.http.post(app.url("/oauth/introspect")).basic_auth("nobody", Some("x")).form(&[("token", token.as_str())]).send().await.unwrap();
        assert_eq!(wrong_secret.headers()["www-authenticate"], r#"Basic realm="portcullis""#);
        assert_error(wrong_secret, 401, "invalid_client").await;
        let no_token = app.http.post(app.url("/oauth/introspect")).basic_auth("nobody", Some("x")).form(&[("token_type_hint", "access_token")]).send().await.unwrap();
        assert_error(no_token, 400, "invalid_request").await;
    }
}
