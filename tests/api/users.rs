//! Registration and `GET /users/me`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, assert_error, password_form, spawn_app, spawn_app_with};

on_both_databases! {
    async fn registration_returns_the_user_and_never_the_password_or_its_hash(backend: Backend) {
        let app = spawn_app(backend).await;

        let resp = app.http.post(app.url("/users"))
            .json(&serde_json::json!({"username": "Alice.Liddell", "password": PASSWORD, "email": "alice@example.com"}))
            .send().await.unwrap();

        assert_eq!(resp.status(), StatusCode::CREATED);
        let text = resp.text().await.unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("argon2"), "{text}");
        let user: Value = serde_json::from_str(&text).unwrap();
        let mut names: Vec<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["created_at", "email", "email_verified", "id", "username"]);
        assert_eq!(user["username"], "Alice.Liddell");
        assert_eq!(user["email"], "alice@example.com");
        // The caller sees the same through /users/me.
        let token: crate::helpers::TokenBody = app.token(&password_form("alice.liddell", PASSWORD)).await.json().await.unwrap();
        let me: Value = app.me(&token.access_token).await.json().await.unwrap();
        assert_eq!(me, user);
    }

    async fn a_taken_username_or_email_is_409_whatever_the_case(backend: Backend) {
        let app = spawn_app(backend).await;
        let register = |username: &str, email: &str| {
            app.http.post(app.url("/users"))
                .json(&serde_json::json!({"username": username, "password": PASSWORD, "email": email}))
                .send()
        };
        assert_eq!(register("alice", "alice@example.com").await.unwrap().status(), StatusCode::CREATED);

        assert_error(register("ALICE", "other@example.com").await.unwrap(), 409, "username_taken").await;
        assert_error(register("bob", "alice@example.com").await.unwrap(), 409, "email_taken").await;
        assert_eq!(app.count("users").await, 1);
    }

    async fn an_email_differing_only_by_case_is_taken_and_each_keeps_its_spelling(backend: Backend) {
        let app = spawn_app(backend).await;
        let register = |username: &str, email: &str| {
            app.http.post(app.url("/users"))
                .json(&serde_json::json!({"username": username, "password": PASSWORD, "email": email}))
                .send()
        };
        let first = register("alice", "Alice@Example.com").await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        assert_eq!(first.json::<Value>().await.unwrap()["email"], "Alice@Example.com");

        for taken in ["alice@example.com", "ALICE@EXAMPLE.COM", "Alice@Example.com"] {
            assert_error(register("bob", taken).await.unwrap(), 409, "email_taken").await;
        }
        assert_eq!(app.count("users").await, 1);

        // The address as given is what the user sees.
        let token: crate::helpers::TokenBody = app.token(&password_form("alice", PASSWORD)).await.json().await.unwrap();
        let me: Value = app.me(&token.access_token).await.json().await.unwrap();
        assert_eq!(me["email"], "Alice@Example.com");
    }

    async fn each_registration_rule_is_named_when_it_fails(backend: Backend) {
        let app = spawn_app(backend).await;
        let cases = [
            ("ab", PASSWORD, "invalid_username"),
            ("has space", PASSWORD, "invalid_username"),
            ("alice", "short", "password_too_short"),
            ("alice", "password123", "password_too_common"),
            ("alice", "ALICE", "password_too_short"),
            ("alice_in_chains", "Alice_In_Chains", "password_is_username"),
        ];
        for (username, password, code) in cases {
            let body = assert_error(app.register(username, password).await, 422, code).await;
            assert!(body["error_description"].as_str().unwrap().len() > 5, "{code}");
        }
        let bad_email = app.http.post(app.url("/users"))
            .json(&serde_json::json!({"username": "alice", "password": PASSWORD, "email": "not-an-address"}))
            .send().await.unwrap();
        assert_error(bad_email, 422, "invalid_email").await;
        assert_eq!(app.count("users").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_password_length_is_configurable() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.password.min_length = 30).await;
    assert_error(
        app.register("alice", PASSWORD).await,
        422,
        "password_too_short",
    )
    .await;
    let ok = app
        .register("alice", "a much longer passphrase than thirty")
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_can_be_switched_off() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.registration.enabled = false).await;
    assert_error(
        app.register("alice", PASSWORD).await,
        403,
        "registration_disabled",
    )
    .await;
    assert_eq!(app.count("users").await, 0);
}
