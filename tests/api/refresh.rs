//! The refresh grant: rotation, reuse detection, the grace window, scope, client binding, lifetimes.

use chrono::Utc;
use portcullis::{
    entity::{refresh_token, session},
    value::grant_type::GrantType,
};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::helpers::{
    Deny, TestApp, assert_error, claims_of, spawn_app_on, spawn_app_with, with_deny,
};

async fn session_of(app: &TestApp, refresh: &str) -> session::Model {
    let hash = portcullis::oauth::secret::hash(refresh);
    let token = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash))
        .one(app.state.db.writer())
        .await
        .unwrap()
        .expect("the token is stored by its hash");
    session::Entity::find_by_id(token.session_id)
        .one(app.state.db.writer())
        .await
        .unwrap()
        .unwrap()
}

on_every_backend! {
    async fn each_refresh_rotates_and_a_spent_token_revokes_the_session(backend: Backend, deny: Deny) {
        // Arrange
        let app = spawn_app_on(backend, deny).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let first = app.login(&user).await;
        let rt1 = first.refresh_token.clone().unwrap();

        // Act: a normal rotation.
        let second = app.refreshed(&rt1).await;
        let rt2 = second.refresh_token.clone().unwrap();

        // Assert: a new token each time, in the same session, and both access tokens live.
        assert_ne!(rt1, rt2);
        assert_eq!(session_of(&app, &rt1).await.id, session_of(&app, &rt2).await.id);
        assert!(app.is_active(&rs, &first.access_token).await);
        assert!(app.is_active(&rs, &second.access_token).await);
        assert_eq!(app.me(&second.access_token).await.status(), StatusCode::OK);

        // Act: the spent token again.
        assert_error(app.refresh(&rt1).await, 400, "invalid_grant").await;

        // Assert: the session is revoked: its live refresh token fails, its access tokens are denied.
        assert_error(app.refresh(&rt2).await, 400, "invalid_grant").await;
        assert!(!app.is_active(&rs, &first.access_token).await);
        assert!(!app.is_active(&rs, &second.access_token).await);
        assert_error(app.me(&second.access_token).await, 401, "invalid_token").await;
        let s = session_of(&app, &rt1).await;
        assert_eq!(s.revoked_reason.as_deref(), Some("refresh_token_reuse"));
        // Another login of the same user is untouched.
        let other = app.login(&user).await;
        assert_eq!(app.me(&other.access_token).await.status(), StatusCode::OK);
    }

    async fn within_the_grace_window_a_retry_gets_the_same_successor_and_never_a_sibling(backend: Backend, deny: Deny) {
        // Arrange
        let app = spawn_app_with(backend, |s| { with_deny(s, deny); s.refresh.reuse_grace = 60; }).await;
        let user = app.seed_user().await;
        let rt1 = app.login(&user).await.refresh_token.unwrap();

        // Act: two presentations of rt1, as racing tabs would.
        let a = app.refreshed(&rt1).await;
        let b = app.refreshed(&rt1).await;

        // Assert: the same successor, fresh access tokens, and one successor row only.
        assert_eq!(a.refresh_token, b.refresh_token);
        assert_ne!(a.access_token, b.access_token);
        assert_eq!(app.me(&b.access_token).await.status(), StatusCode::OK);
        let sid = session_of(&app, &rt1).await.id;
        let rows = refresh_token::Entity::find().filter(refresh_token::Column::SessionId.eq(sid)).all(app.state.db.writer()).await.unwrap();
        assert_eq!(rows.len(), 2, "rt1 and one successor");

        // Act: the successor is used; rt1 again is now reuse even within the window.
        let rt2 = a.refresh_token.unwrap();
        let c = app.refreshed(&rt2).await;
        assert_error(app.refresh(&rt1).await, 400, "invalid_grant").await;

        // Assert: reuse revoked the session.
        assert_error(app.refresh(&c.refresh_token.unwrap()).await, 400, "invalid_grant").await;
        assert_error(app.me(&c.access_token).await, 401, "invalid_token").await;
    }

    async fn revoking_tokens_at_the_revocation_endpoint(backend: Backend, deny: Deny) {
        // Arrange
        let app = spawn_app_on(backend, deny).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let kept = app.login(&user).await;
        let by_access = app.login(&user).await;
        let by_refresh = app.login(&user).await;
        let other_client = app.seed_client(true, &[GrantType::Password, GrantType::RefreshToken], "profile").await;
        let revoke = |token: String, client_id: Option<String>| {
            let app = &app;
            async move {
                let mut form = vec![("token", token)];
                if let Some(id) = client_id {
                    form.push(("client_id", id));
                }
                app.http.post(app.url("/oauth/revoke")).form(&form).send().await.unwrap()
            }
        };

        // Act + Assert: another client's attempt changes nothing, and answers 200 all the same.
        let resp = revoke(by_access.access_token.clone(), Some(other_client.id.clone())).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.text().await.unwrap().is_empty());
        assert_eq!(revoke(by_refresh.refresh_token.clone().unwrap(), Some(other_client.id.clone())).await.status(), StatusCode::OK);
        assert!(app.is_active(&rs, &by_access.access_token).await);
        let by_refresh = app.refreshed(by_refresh.refresh_token.as_ref().unwrap()).await;

        // An access token: its jti is denied; its session's refresh token still works.
        assert_eq!(revoke(by_access.access_token.clone(), None).await.status(), StatusCode::OK);
        assert!(!app.is_active(&rs, &by_access.access_token).await);
        assert_error(app.me(&by_access.access_token).await, 401, "invalid_token").await;
        let fresh = app.refreshed(by_access.refresh_token.as_ref().unwrap()).await;
        assert!(app.is_active(&rs, &fresh.access_token).await);

        // A refresh token: its whole session, refresh and access tokens alike.
        assert_eq!(revoke(by_refresh.refresh_token.clone().unwrap(), None).await.status(), StatusCode::OK);
        assert_error(app.refresh(by_refresh.refresh_token.as_ref().unwrap()).await, 400, "invalid_grant").await;
        assert!(!app.is_active(&rs, &by_refresh.access_token).await);
        assert_error(app.me(&by_refresh.access_token).await, 401, "invalid_token").await;

        // Garbage of any kind: 200, nothing else.
        for garbage in ["", "x", "a.b.c", &"z".repeat(5000)] {
            let resp = revoke(garbage.to_owned(), None).await;
            if garbage.is_empty() {
                assert_error(resp, 400, "invalid_request").await;
            } else {
                assert_eq!(resp.status(), StatusCode::OK, "{garbage:.10}");
            }
        }
        // The untouched login is still fine.
        assert!(app.is_active(&rs, &kept.access_token).await);
        assert_eq!(app.refresh(kept.refresh_token.as_ref().unwrap()).await.status(), StatusCode::OK);
    }

    async fn two_instances_share_revocations_and_rotations(backend: Backend, deny: Deny) {
        // Only a shared deny list can carry an access-token revocation across instances.
        if deny == Deny::Memory {
            return;
        }
        let a = spawn_app_on(backend, deny).await;
        let b = a.another_instance().await;
        let rs = a.resource_server().await;
        let user = a.seed_user().await;
        let login = a.login(&user).await;

        // A revocation through one is seen by the other.
        let resp = a.revoke(&login.access_token).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(!b.is_active(&rs, &login.access_token).await);
        assert_error(b.me(&login.access_token).await, 401, "invalid_token").await;

        // A token rotated on one is spent on the other: reuse, and the session dies everywhere.
        let rotated = a.refreshed(login.refresh_token.as_ref().unwrap()).await;
        assert_error(b.refresh(login.refresh_token.as_ref().unwrap()).await, 400, "invalid_grant").await;
        assert_error(a.refresh(rotated.refresh_token.as_ref().unwrap()).await, 400, "invalid_grant").await;
        assert_error(a.me(&rotated.access_token).await, 401, "invalid_token").await;
    }
}

on_both_databases! {
    async fn fifty_concurrent_uses_of_one_refresh_token_give_exactly_one_success(backend: Backend) {
        // Arrange
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let rt = app.login(&user).await.refresh_token.unwrap();
        let sessions_before = app.count("sessions").await;

        // Open fifty connections first, so the fifty uses arrive together rather than one by one.
        let warm = (0..50).map(|_| app.http.get(app.url("/healthz")).send());
        futures_util::future::join_all(warm).await;

        // Act
        let attempts = (0..50).map(|_| app.refresh(&rt));
        let answers = futures_util::future::join_all(attempts).await;

        // Assert
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|&s| s == 200 || s == 400), "{statuses:?}");
        // Nothing half-written: one successor at most, no new session.
        assert_eq!(app.count("refresh_tokens").await, 2);
        assert_eq!(app.count("sessions").await, sessions_before);
    }

    async fn rotations_that_arrive_together_each_get_their_own_session_s_successor(backend: Backend) {
        // Arrange: twelve sessions, a spent token and a token that never existed. Rotations that arrive
        // while a statement runs are spent by the next one together; each must still get its own answer.
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let mut live = Vec::new();
        for _ in 0..12 {
            live.push(app.login(&user).await.refresh_token.unwrap());
        }
        let spent = app.login(&user).await.refresh_token.unwrap();
        app.refreshed(&spent).await;
        let warm = (0..14).map(|_| app.http.get(app.url("/healthz")).send());
        futures_util::future::join_all(warm).await;

        // Act
        let presented: Vec<&str> = live.iter().map(String::as_str).chain([spent.as_str(), "never-issued"]).collect();
        let answers = futures_util::future::join_all(presented.iter().map(|rt| app.refresh(rt))).await;

        // Assert: every live token's successor is in the presented token's session, and so is the sid of
        // its access token; the spent token is reuse and revokes its own session only.
        let mut answers = answers.into_iter();
        let mut successors = Vec::new();
        for rt in &live {
            let resp = answers.next().unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body: crate::helpers::TokenBody = resp.json().await.unwrap();
            let session = session_of(&app, rt).await;
            let successor = body.refresh_token.unwrap();
            assert_eq!(session_of(&app, &successor).await.id, session.id);
            assert_eq!(claims_of(&body.access_token)["sid"], session.id.to_string());
            assert!(session.revoked_at.is_none());
            successors.push(successor);
        }
        assert_error(answers.next().unwrap(), 400, "invalid_grant").await;
        assert_eq!(session_of(&app, &spent).await.revoked_reason.as_deref(), Some("refresh_token_reuse"));
        assert_error(answers.next().unwrap(), 400, "invalid_grant").await;
        assert_eq!(app.count("refresh_tokens").await, 12 * 2 + 2);
        // And each chain goes on.
        let again = futures_util::future::join_all(successors.iter().map(|rt| app.refresh(rt))).await;
        assert!(again.iter().all(|r| r.status() == StatusCode::OK));
    }

    async fn scope_narrows_the_access_token_while_the_successor_keeps_the_token_s_scope(backend: Backend) {
        let app = spawn_app_on(backend, Deny::Memory).await;
        let admin = app.seed_admin().await;
        let rt = app.login(&admin).await.refresh_token.unwrap();

        let narrowed = app.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt), ("scope", "profile")]).await;
        assert_eq!(narrowed.status(), StatusCode::OK);
        let narrowed: crate::helpers::TokenBody = narrowed.json().await.unwrap();
        assert_eq!(narrowed.scope, "profile");

        // RFC 6749 §6: the new refresh token's scope is identical to the presented one's.
        let rt2 = narrowed.refresh_token.unwrap();
        let full = app.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt2), ("scope", "admin profile")]).await;
        assert_eq!(full.status(), StatusCode::OK);
        let full: crate::helpers::TokenBody = full.json().await.unwrap();
        assert_eq!(full.scope, "admin profile");

        // Wider than the token is refused, and spends nothing.
        let rt3 = full.refresh_token.unwrap();
        let widened = app.token(&[("grant_type", "refresh_token"), ("refresh_token", &rt3), ("scope", "admin profile orders.read")]).await;
        assert_error(widened, 400, "invalid_scope").await;
        assert_eq!(app.refreshed(&rt3).await.scope, "admin profile");
    }

    async fn a_spent_token_is_reuse_even_when_expired_or_asking_for_more(backend: Backend) {
        // Arrange: a spent token asking for a wider scope, and a spent token past its idle lifetime.
        let app = spawn_app_on(backend, Deny::Memory).await;
        let admin = app.seed_admin().await;
        let greedy = app.login(&admin).await.refresh_token.unwrap();
        app.refreshed(&greedy).await;
        let stale = app.login(&admin).await.refresh_token.unwrap();
        app.refreshed(&stale).await;
        let row = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(portcullis::oauth::secret::hash(&stale)))
            .one(app.state.db.writer()).await.unwrap().unwrap();
        refresh_token::ActiveModel { id: Set(row.id), expires_at: Set(Utc::now() - chrono::Duration::seconds(1)), ..Default::default() }
            .update(app.state.db.writer()).await.unwrap();

        // Act
        let wider = app.token(&[("grant_type", "refresh_token"), ("refresh_token", &greedy), ("scope", "admin profile orders.read")]).await;
        let expired = app.refresh(&stale).await;

        // Assert: both are reuse, not a lesser refusal, and each revoked its session.
        assert_error(wider, 400, "invalid_grant").await;
        assert_error(expired, 400, "invalid_grant").await;
        for spent in [&greedy, &stale] {
            assert_eq!(session_of(&app, spent).await.revoked_reason.as_deref(), Some("refresh_token_reuse"));
        }
    }

    async fn a_refresh_token_works_only_for_its_own_client(backend: Backend) {
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let other = app.seed_client(false, &[GrantType::Password, GrantType::RefreshToken], "profile").await;
        let rt = app.login(&user).await.refresh_token.unwrap();

        let stolen = app.token_basic(&other.id, other.secret.as_deref().unwrap(), &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;

        assert_error(stolen, 400, "invalid_grant").await;
        // Nothing was spent or revoked: the rightful client still refreshes.
        assert_eq!(app.refresh(&rt).await.status(), StatusCode::OK);
    }

    async fn the_configured_lifetimes_are_stored_and_enforced(backend: Backend) {
        // Arrange
        let app = spawn_app_with(backend, |s| { s.refresh.idle_ttl = 3600; s.refresh.absolute_ttl = 7200; }).await;
        let user = app.seed_user().await;
        let rt = app.login(&user).await.refresh_token.unwrap();
        let now = Utc::now();
        let s = session_of(&app, &rt).await;
        let row = refresh_token::Entity::find().filter(refresh_token::Column::SessionId.eq(s.id)).one(app.state.db.writer()).await.unwrap().unwrap();
        assert!((row.expires_at - now).num_seconds().abs_diff(3600) <= 5, "idle: {}", row.expires_at);
        assert!((s.expires_at - now).num_seconds().abs_diff(7200) <= 5, "absolute: {}", s.expires_at);

        // Past its idle lifetime: refused, and nothing written.
        refresh_token::ActiveModel { id: Set(row.id), expires_at: Set(now - chrono::Duration::seconds(1)), ..Default::default() }
            .update(app.state.db.writer()).await.unwrap();
        assert_error(app.refresh(&rt).await, 400, "invalid_grant").await;
        assert_eq!(app.count("refresh_tokens").await, 1);

        // Past the session's absolute lifetime: refused even with a token inside its idle lifetime.
        let rt = app.login(&user).await.refresh_token.unwrap();
        let s = session_of(&app, &rt).await;
        session::ActiveModel { id: Set(s.id), expires_at: Set(now - chrono::Duration::seconds(1)), ..Default::default() }
            .update(app.state.db.writer()).await.unwrap();
        assert_error(app.refresh(&rt).await, 400, "invalid_grant").await;
    }

    async fn a_deleted_clients_refresh_tokens_die_with_it(backend: Backend) {
        // Arrange: a client that has refreshed once, so its row is in the short-lived client cache.
        let app = spawn_app_with(backend, |_| {}).await;
        let client = app.seed_client(true, &[GrantType::Password, GrantType::RefreshToken], "").await;
        let user = app.seed_user().await;
        let body: serde_json::Value = app
            .token(&[("grant_type", "password"), ("client_id", &client.id), ("username", &user.username), ("password", &user.password)])
            .await.json().await.unwrap();
        let rt = body["refresh_token"].as_str().unwrap().to_owned();
        let refresh = |rt: String| {
            let (app, client) = (&app, &client);
            async move { app.token(&[("grant_type", "refresh_token"), ("client_id", &client.id), ("refresh_token", &rt)]).await }
        };
        let resp = refresh(rt).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let rt = resp.json::<serde_json::Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();

        // Act
        assert!(app.state.revoker.delete_client(&client.id).await.unwrap());
        let resp = refresh(rt).await;

        // Assert: refused, with no token and no server error: `invalid_grant` while the row is cached
        // (the session is gone), `invalid_client` after.
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(matches!((status, body["error"].as_str()), (400, Some("invalid_grant")) | (401, Some("invalid_client"))), "{status} {body}");
        assert_eq!(app.count("refresh_tokens").await, 0);
    }

    async fn a_refresh_marks_the_session_used_to_the_minute(backend: Backend) {
        // Arrange: a session last used well over a minute ago.
        let app = spawn_app_with(backend, |_| {}).await;
        let user = app.seed_user().await;
        let rt = app.login(&user).await.refresh_token.unwrap();
        let s = session_of(&app, &rt).await;
        let long_ago = Utc::now() - chrono::Duration::minutes(10);
        session::ActiveModel { id: Set(s.id), last_used_at: Set(long_ago), ..Default::default() }
            .update(app.state.db.writer()).await.unwrap();

        // Act
        let before = Utc::now();
        let rt = app.refreshed(&rt).await.refresh_token.unwrap();

        // Assert: moved to the refresh; a second one within the minute leaves it be.
        let used = session_of(&app, &rt).await.last_used_at;
        assert!(used >= before - chrono::Duration::seconds(1), "last_used_at {used} not moved");
        app.refreshed(&rt).await;
        let s = session::Entity::find_by_id(s.id).one(app.state.db.writer()).await.unwrap().unwrap();
        assert_eq!(s.last_used_at, used);
    }

    async fn a_successor_never_outlives_its_session(backend: Backend) {
        let app = spawn_app_with(backend, |s| { s.refresh.idle_ttl = 3600; s.refresh.absolute_ttl = 3600; }).await;
        let user = app.seed_user().await;
        let rt = app.login(&user).await.refresh_token.unwrap();
        let s = session_of(&app, &rt).await;
        let successor = app.refreshed(&rt).await.refresh_token.unwrap();
        let hash = portcullis::oauth::secret::hash(&successor);
        let row = refresh_token::Entity::find().filter(refresh_token::Column::TokenHash.eq(hash)).one(app.state.db.writer()).await.unwrap().unwrap();
        assert!(row.expires_at <= s.expires_at);
    }

    async fn a_disabled_user_or_a_changed_password_stops_refresh(backend: Backend) {
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let rt = app.login(&user).await.refresh_token.unwrap();
        app.disable_in_database(&user).await;
        assert_error(app.refresh(&rt).await, 400, "invalid_grant").await;

        let other = app.seed_user().await;
        let rt = app.login(&other).await.refresh_token.unwrap();
        // Changed in the database only, so that nothing but the refresh rule can refuse it.
        app.change_password_in_database(&other).await;
        assert_error(app.refresh(&rt).await, 400, "invalid_grant").await;
    }

    async fn garbage_and_dead_refresh_tokens_are_invalid_grant_and_write_nothing(backend: Backend) {
        // Arrange
        let app = spawn_app_on(backend, Deny::Memory).await;
        let user = app.seed_user().await;
        let deleted = app.seed_user().await;
        let deleted_rt = app.login(&deleted).await.refresh_token.unwrap();
        let found = app.state.users.find_by_username(&deleted.username).await.unwrap().unwrap();
        portcullis::entity::user::Entity::delete_by_id(found.id).exec(app.state.db.writer()).await.unwrap();
        let revoked = app.login(&user).await;
        let resp = app.revoke(revoked.refresh_token.as_deref().unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let (tokens, sessions) = (app.count("refresh_tokens").await, app.count("sessions").await);

        // Act + Assert
        for garbage in ["x".to_owned(), "A".repeat(43), "é".repeat(300), "y".repeat(10_000), deleted_rt, revoked.refresh_token.unwrap()] {
            let body = assert_error(app.refresh(&garbage).await, 400, "invalid_grant").await;
            assert!(body["error_description"].is_string());
        }
        assert_eq!(app.count("refresh_tokens").await, tokens);
        assert_eq!(app.count("sessions").await, sessions);
    }
}
