//! The client_credentials grant (RFC 6749 §4.4): a confidential client's own token, what it is refused,
//! and how soon a deleted or re-made client is known.

use std::time::Duration;

use portcullis::{
    oauth::secret,
    ports::NewClient,
    store::clients::CACHE_TTL,
    value::{grant_type::GrantType, scope::Scope},
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, TestClient, TokenBody, assert_error, spawn_app_with};

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
            secret_hash: second.secret.as_deref().map(secret::hash),
            grant_types: &[GrantType::ClientCredentials],
            scopes: &Scope::parse("orders.read").unwrap(),
            redirect_uris: &[],
            post_logout_redirect_uris: &[],
        }).await.unwrap();

        // Assert: the new secret works at once, and the old one is refused from then on.
        assert_eq!(client_credentials(&app, &second, None).await.status(), StatusCode::OK);
        assert_error(client_credentials(&app, &first, None).await, 401, "invalid_client").await;
    }
}
