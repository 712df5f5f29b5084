//! The caller's sessions, password change, and user administration.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, TestUser, assert_error, claims_of, password_form, spawn_app_on};

on_every_backend! {
    async fn sessions_are_listed_and_logged_out_one_by_one_or_all_at_once(backend: Backend, deny: Deny) {
        // Arrange: three logins of one user, one of another.
        let app = spawn_app_on(backend, deny).await;
        let user = app.seed_user().await;
        let logins = [app.login(&user).await, app.login(&user).await, app.login(&user).await];
        let stranger = app.seed_user().await;
        let strangers = app.login(&stranger).await;
        let me = &logins[0].access_token;

        // Act + Assert: the list.
        let resp = app.http.get(app.url("/users/me/sessions")).bearer_auth(me).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let sessions: Vec<Value> = resp.json().await.unwrap();
        assert_eq!(sessions.len(), 3);
        for s in &sessions {
            for field in ["id", "client_id", "created_at", "last_used_at", "expires_at"] {
                assert!(!s[field].is_null(), "{field}");
            }
        }

        // Log out the second login: its tokens die, the others live.
        let second = claims_of(&logins[1].access_token)["sid"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url(&format!("/users/me/sessions/{second}"))).bearer_auth(me).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_error(app.me(&logins[1].access_token).await, 401, "invalid_token").await;
        assert_error(app.refresh(logins[1].refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;
        assert_eq!(app.me(&logins[2].access_token).await.status(), StatusCode::OK);
        let listed: Vec<Value> = app.http.get(app.url("/users/me/sessions")).bearer_auth(me).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed.len(), 2);

        // Someone else's session is not ours to end.
        let theirs = claims_of(&strangers.access_token)["sid"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url(&format!("/users/me/sessions/{theirs}"))).bearer_auth(me).send().await.unwrap();
        assert_error(resp, 404, "not_found").await;
        assert_eq!(app.me(&strangers.access_token).await.status(), StatusCode::OK);

        // Log out everywhere.
        let resp = app.http.delete(app.url("/users/me/sessions")).bearer_auth(&logins[2].access_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        for login in &logins {
            assert_error(app.me(&login.access_token).await, 401, "invalid_token").await;
            assert_error(app.refresh(login.refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;
        }
        assert_eq!(app.me(&strangers.access_token).await.status(), StatusCode::OK);
        // A new login works at once.
        assert_eq!(app.me(&app.login(&user).await.access_token).await.status(), StatusCode::OK);
    }

    async fn a_password_change_revokes_every_earlier_session_and_token(backend: Backend, deny: Deny) {
        let app = spawn_app_on(backend, deny).await;
        let user = app.seed_user().await;
        let before = [app.login(&user).await, app.login(&user).await];
        let change = |current: &str, new: &str| {
            app.http.post(app.url("/users/me/password")).bearer_auth(&before[0].access_token)
                .json(&serde_json::json!({"current_password": current, "new_password": new})).send()
        };

        assert_error(change("not it", "a brand new passphrase").await.unwrap(), 400, "invalid_current_password").await;
        assert_error(change(PASSWORD, "password1").await.unwrap(), 422, "password_too_common").await;
        assert_eq!(app.me(&before[0].access_token).await.status(), StatusCode::OK, "failed attempts change nothing");

        let resp = change(PASSWORD, "a brand new passphrase").await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);

        for login in &before {
            assert_error(app.me(&login.access_token).await, 401, "invalid_token").await;
            assert_error(app.refresh(login.refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;
        }
        let old = app.token(&password_form(&user.username, PASSWORD)).await;
        assert_error(old, 400, "invalid_grant").await;
        let renewed = TestUser { username: user.username.clone(), password: "a brand new passphrase".into() };
        let after = app.login(&renewed).await;
        assert_eq!(app.me(&after.access_token).await.status(), StatusCode::OK);
        assert_eq!(app.refresh(after.refresh_token.as_deref().unwrap()).await.status(), StatusCode::OK);
    }

    async fn an_admin_disables_and_enables_a_user(backend: Backend, deny: Deny) {
        // Arrange
        let app = spawn_app_on(backend, deny).await;
        let admin = app.seed_admin().await;
        let admin_token = app.login(&admin).await.access_token;
        let user = app.seed_user().await;
        let users_token = app.login(&user).await;
        let id = app.state.users.find_by_username(&user.username).await.unwrap().unwrap().id;

        // Non-admins may not.
        let resp = app.http.get(app.url("/admin/users")).bearer_auth(&users_token.access_token).send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], r#"Bearer error="insufficient_scope""#);
        assert_error(resp, 403, "insufficient_scope").await;
        let resp = app.http.post(app.url(&format!("/admin/users/{id}/disable"))).bearer_auth(&users_token.access_token).send().await.unwrap();
        assert_error(resp, 403, "insufficient_scope").await;

        // The list.
        let listed: Vec<Value> = app.http.get(app.url("/admin/users?limit=1")).bearer_auth(&admin_token).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed.len(), 1);
        let all: Vec<Value> = app.http.get(app.url("/admin/users")).bearer_auth(&admin_token).send().await.unwrap().json().await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|u| u["is_active"] == true));
        let resp = app.http.get(app.url("/admin/users?limit=0")).bearer_auth(&admin_token).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;
        let resp = app.http.get(app.url("/admin/users?limit=lots")).bearer_auth(&admin_token).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;

        // Disable: every token of the user dies, and they cannot log in.
        let resp = app.http.post(app.url(&format!("/admin/users/{id}/disable"))).bearer_auth(&admin_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_error(app.me(&users_token.access_token).await, 401, "invalid_token").await;
        assert_error(app.refresh(users_token.refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;
        let login = app.token(&password_form(&user.username, &user.password)).await;
        assert_error(login, 400, "invalid_grant").await;

        // Enable: they log in again.
        let resp = app.http.post(app.url(&format!("/admin/users/{id}/enable"))).bearer_auth(&admin_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&app.login(&user).await.access_token).await.status(), StatusCode::OK);

        // An unknown id.
        let resp = app.http.post(app.url(&format!("/admin/users/{}/disable", uuid::Uuid::new_v4()))).bearer_auth(&admin_token).send().await.unwrap();
        assert_error(resp, 404, "not_found").await;
    }
}

on_both_databases! {
    async fn a_session_gone_idle_is_no_longer_listed(backend: Backend) {
        // Arrange: two logins; a minute's idle lifetime; only the second is refreshed in time.
        let app = crate::helpers::spawn_app_with(backend, |s| s.refresh.idle_ttl = 60).await;
        let user = app.seed_user().await;
        let idle = app.login(&user).await;
        let kept = app.login(&user).await;
        app.clock.advance(std::time::Duration::from_secs(40));
        let resp = app.refresh(kept.refresh_token.as_deref().unwrap()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let me = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

        // Act: the first login's token has been idle past its lifetime, the second's not.
        app.clock.advance(std::time::Duration::from_secs(30));
        let resp = app.http.get(app.url("/users/me/sessions")).bearer_auth(&me).send().await.unwrap();

        // Assert
        assert_eq!(resp.status(), StatusCode::OK);
        let listed: Vec<Value> = resp.json().await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [claims_of(&kept.access_token)["sid"].as_str().unwrap()]);
        assert_error(app.refresh(idle.refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;
    }
}
