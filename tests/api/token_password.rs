//! The password grant, end to end: register → token → me, for every way a client can present itself;
//! and the stored hash, upgraded at login but never over a password changed meanwhile.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::value::grant_type::GrantType;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    TestApp, TokenBody, assert_error, claims_of, password_form, spawn_app, spawn_app_with,
};

const PASSWORD_GRANTS: &[GrantType] = &[GrantType::Password, GrantType::RefreshToken];

async fn assert_me_works(app: &TestApp, token: &TokenBody, username: &str) {
    let resp = app.me(&token.access_token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["username"], username);
}

on_both_databases! {
    async fn register_token_me_works_for_every_kind_of_client(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let public = app.seed_client(true, PASSWORD_GRANTS, "profile").await;
        let confidential = app.seed_client(false, PASSWORD_GRANTS, "profile").await;
        let secret = confidential.secret.clone().unwrap();
        let default_id = app.settings.clients.default_client_id.clone();
        let grant = password_form(&user.username, &user.password);
        let with = |extra: &[(&'static str, String)]| {
            let mut form: Vec<(&str, String)> = grant.iter().map(|(k, v)| (*k, v.to_string())).collect();
            form.extend(extra.iter().cloned());
            form
        };

        // Act + Assert, for each way of presenting a client.
        let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
            ("no client at all", app.http.post(app.url("/oauth/token")).form(&with(&[])), default_id.as_str()),
            ("Swagger UI's empty Basic", app.http.post(app.url("/oauth/token")).header("authorization", "Basic Og==").form(&with(&[("scope", String::new())])), default_id.as_str()),
            ("default client by id", app.http.post(app.url("/oauth/token")).form(&with(&[("client_id", default_id.clone())])), default_id.as_str()),
            ("public client by id", app.http.post(app.url("/oauth/token")).form(&with(&[("client_id", public.id.clone())])), public.id.as_str()),
            ("client_secret_basic", app.http.post(app.url("/oauth/token")).basic_auth(&confidential.id, Some(&secret)).form(&with(&[])), confidential.id.as_str()),
            ("client_secret_post", app.http.post(app.url("/oauth/token")).form(&with(&[("client_id", confidential.id.clone()), ("client_secret", secret.clone())])), confidential.id.as_str()),
        ];
        for (case, request, client_id) in cases {
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{case}");
            assert_eq!(resp.headers()["cache-control"], "no-store", "{case}");
            let token: TokenBody = resp.json().await.unwrap();
            assert_eq!(token.token_type, "Bearer", "{case}");
            assert!(token.refresh_token.is_some(), "every one of these clients may refresh: {case}");
            assert_eq!(claims_of(&token.access_token)["client_id"], client_id, "{case}");
            assert_me_works(&app, &token, &user.username).await;
        }
    }

    async fn a_token_verifies_with_nothing_but_the_jwks_and_carries_exactly_the_specified_claims(backend: Backend) {
        // Arrange: a lifetime other than the default, to see that it is the configured one.
        let app = spawn_app_with(backend, |s| s.tokens.access_ttl = 600).await;
        let user = app.seed_user().await;

        // Act
        let token = app.login(&user).await;
        let jwks: Value = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();

        // Assert: the header.
        let header = jsonwebtoken::decode_header(&token.access_token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let kid = header.kid.unwrap();
        // Only the JWKS: the decoding key is built from its `n` and `e`.
        let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("the kid is published");
        let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["http://127.0.0.1:8080"]);
        validation.set_audience(&["portcullis"]);
        let claims = jsonwebtoken::decode::<Value>(&token.access_token, &key, &validation).unwrap().claims;

        let names: BTreeSet<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid", "username"].into();
        assert_eq!(names, expected);
        assert_eq!(claims["iss"], "http://127.0.0.1:8080");
        assert_eq!(claims["aud"], "portcullis");
        assert_eq!(claims["username"], user.username.as_str());
        assert_eq!(claims["scope"], "profile");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(token.expires_in, 600);
        let me: Value = app.me(&token.access_token).await.json().await.unwrap();
        assert_eq!(claims["sub"], me["id"]);
        // The session row was created with the token, and `sid` names it.
        assert_eq!(app.count("sessions").await, 1);
        let sid = claims["sid"].as_str().unwrap();
        let sid: uuid::Uuid = sid.parse().unwrap();
        use sea_orm::EntityTrait;
        let session = portcullis::entity::session::Entity::find_by_id(sid).one(app.state.db.writer()).await.unwrap().expect("the sid names a session");
        assert_eq!(session.client_id, app.settings.clients.default_client_id);
        assert_eq!(session.user_id.to_string(), claims["sub"].as_str().unwrap());
    }

    async fn unknown_user_wrong_password_and_disabled_user_get_byte_identical_answers(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let disabled = app.seed_user().await;
        app.disable_in_database(&disabled).await;

        // Act
        let mut answers = Vec::new();
        for (username, password) in [
            ("nobody-at-all", user.password.as_str()),
            (user.username.as_str(), "not the password at all"),
            (disabled.username.as_str(), disabled.password.as_str()),
        ] {
            let resp = app.token(&password_form(username, password)).await;
            let status = resp.status();
            let mut headers: Vec<(String, String)> = resp.headers().iter()
                // Only what differs per request by design: the date and the request id.
                .filter(|(name, _)| *name != "date" && *name != "x-request-id")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            answers.push((status, headers, resp.bytes().await.unwrap()));
        }

        // Assert
        assert_eq!(answers[0].0, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_slice(&answers[0].2).unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(answers[0], answers[1], "unknown user vs wrong password");
        assert_eq!(answers[0], answers[2], "unknown user vs disabled user");
        assert_eq!(app.count("sessions").await, 0);
    }

    async fn scope_is_what_the_client_may_grant_and_admin_only_for_admins(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let admin = app.seed_admin().await;
        let login = |username: String, password: String, scope: Option<&'static str>| {
            let app = &app;
            async move {
                let mut form = vec![("grant_type", "password".to_owned()), ("username", username), ("password", password)];
                if let Some(scope) = scope {
                    form.push(("scope", scope.to_owned()));
                }
                app.http.post(app.url("/oauth/token")).form(&form).send().await.unwrap()
            }
        };

        // Act + Assert
        let plain: TokenBody = login(user.username.clone(), user.password.clone(), None).await.json().await.unwrap();
        assert_eq!(plain.scope, "profile");
        let admins: TokenBody = login(admin.username.clone(), admin.password.clone(), None).await.json().await.unwrap();
        assert_eq!(admins.scope, "admin profile");
        assert_eq!(claims_of(&admins.access_token)["scope"], "admin profile");
        let narrowed: TokenBody = login(admin.username.clone(), admin.password.clone(), Some("profile")).await.json().await.unwrap();
        assert_eq!(narrowed.scope, "profile");
        assert_error(login(user.username.clone(), user.password.clone(), Some("admin")).await, 400, "invalid_scope").await;
        assert_error(login(user.username.clone(), user.password.clone(), Some("profile email")).await, 400, "invalid_scope").await;
    }

    async fn a_client_without_the_password_grant_is_unauthorized_client(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let client = app.seed_client(false, &[GrantType::ClientCredentials], "profile").await;

        let resp = app.token_basic(&client.id, client.secret.as_deref().unwrap(), &password_form(&user.username, &user.password)).await;

        assert_error(resp, 400, "unauthorized_client").await;
        assert_eq!(app.count("sessions").await, 0);
    }

    async fn a_hash_with_older_parameters_is_replaced_at_login(backend: Backend) {
        use argon2::{Algorithm, Argon2, Params, Version, password_hash::PasswordHasher};
        use sea_orm::{ActiveModelTrait, Set};
        // Arrange: a user whose stored hash predates the current parameters.
        let app = spawn_app(backend).await;
        let user = app.seed_user().await;
        let stored = app.state.users.find_by_username(&user.username).await.unwrap().unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8192, 1, 1, None).unwrap())
            .hash_password(user.password.as_bytes()).unwrap().to_string();
        portcullis::entity::user::ActiveModel { id: Set(stored.id), password_hash: Set(old.clone()), ..Default::default() }
            .update(app.state.db.writer()).await.unwrap();

        // Act
        app.login(&user).await;

        // Assert
        let after = app.state.users.find(stored.id).await.unwrap().unwrap().password_hash;
        assert!(after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{after}");
        assert_ne!(after, old);
        app.login(&user).await;
    }

    async fn a_rehash_never_overwrites_a_password_changed_meanwhile(backend: Backend) {
        // Arrange: a login verified the old password (its row as read then), and the password changes.
        let app = spawn_app_with(backend, |_| {}).await;
        let user = app.seed_user().await;
        let verified = app.state.users.find_by_username(&user.username).await.unwrap().unwrap();
        let token = app.login(&user).await.access_token;
        let resp = app.change_password(&token, &user.password, "a brand new passphrase").await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);

        // Act: the login's rehash of the old password arrives late.
        app.state.users.update_hash(verified.id, verified.password_changed_at, verified.password_hash.clone()).await.unwrap();

        // Assert: the new password stands, the old one does not come back.
        let old = app.token(&password_form(&user.username, &user.password)).await;
        assert_error(old, 400, "invalid_grant").await;
        let new = app.token(&password_form(&user.username, "a brand new passphrase")).await;
        assert_eq!(new.status(), StatusCode::OK);
    }
}
