//! Browser sign-in: `/oauth/authorize`, its sign-in page, and the authorization code grant with PKCE,
//! driven as a browser would (the page's form, its cookies) by an HTTP client.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis::{
    entity::session,
    ports::NewClient,
    value::{grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope},
};
use reqwest::{Response, StatusCode};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{
    Browser, TestApp, TestUser, VERIFIER, assert_error, challenge, claims_of, hidden_fields,
    spawn_app,
};

pub(crate) const REDIRECT: &str = "https://app.example.com/callback";

/// A public client of the code flow, registered for [`REDIRECT`] and a loopback URI.
pub(crate) async fn app_client(app: &TestApp) -> String {
    app.seed_code_client(
        "spa",
        "openid profile email",
        &[REDIRECT, "http://127.0.0.1/cb"],
    )
    .await
}

/// The parameters of an authorization request of `client`, with `changes` applied (a `None` value
/// removes one).
pub(crate) fn request(client: &str, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let challenge = challenge(VERIFIER);
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "st4te"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("nonce", "n0nce"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (name, value) in changes {
        params.retain(|(k, _)| k != name);
        if let Some(value) = value {
            params.push((name.to_string(), value.to_string()));
        }
    }
    params
}

/// The query of a `303`'s `Location` at the client's redirect URI.
pub(crate) fn redirected(resp: &Response) -> Vec<(String, String)> {
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "a redirect");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            location.scheme(),
            location.host_str().unwrap(),
            location.path()
        ),
        REDIRECT
    );
    location.query_pairs().into_owned().collect()
}

pub(crate) fn param<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) async fn redeem(app: &TestApp, client: &str, code: &str, verifier: &str) -> Response {
    app.token(&[
        ("grant_type", "authorization_code"),
        ("client_id", client),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ])
    .await
}

on_both_databases! {
    async fn a_browser_signs_in_and_the_client_redeems_the_code_for_tokens_and_an_id_token(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);

        // Act: the sign-in page, then its form.
        let page = browser.get(&request(&client, &[])).await;
        assert_eq!(page.status(), StatusCode::OK);
        let headers = page.headers().clone();
        assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""), "{html}");
        let mut form = hidden_fields(&html);
        form.push(("username".into(), user.username.clone()));
        form.push(("password".into(), user.password.clone()));
        let answer = browser.post(&form).await;

        // Assert: the code comes back with state and iss; the session cookie is HttpOnly and Lax.
        let cookie = answer.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("portcullis_session=")).unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
        let query = redirected(&answer);
        assert_eq!(param(&query, "state"), Some("st4te"));
        assert_eq!(param(&query, "iss"), Some(app.settings.issuer().as_str()));
        let code = param(&query, "code").unwrap().to_owned();

        let resp = redeem(&app, &client, &code, VERIFIER).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let tokens: Value = resp.json().await.unwrap();
        let access = claims_of(tokens["access_token"].as_str().unwrap());
        let id = claims_of(tokens["id_token"].as_str().unwrap());
        assert!(tokens["refresh_token"].is_string());
        assert_eq!(id["aud"], client.as_str());
        assert_eq!(id["iss"], app.settings.issuer());
        assert_eq!(id["sub"], access["sub"]);
        assert_eq!(id["sid"], access["sid"]);
        assert_eq!(id["nonce"], "n0nce");
        assert_eq!(id["preferred_username"], user.username.as_str());
        assert!(id.get("email").is_none(), "no email scope, no email claim");
        let digest = Sha256::digest(tokens["access_token"].as_str().unwrap().as_bytes());
        assert_eq!(id["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));
        assert!(id["auth_time"].as_i64().unwrap() <= id["iat"].as_i64().unwrap());
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(tokens["id_token"].as_str().unwrap().split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(app.me(tokens["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);

        // Userinfo says what the ID token says, by GET and by POST.
        let access_token = tokens["access_token"].as_str().unwrap();
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let resp = app.http.request(method, app.url("/oauth/userinfo")).bearer_auth(access_token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let info: Value = resp.json().await.unwrap();
            assert_eq!(info, serde_json::json!({"sub": id["sub"], "preferred_username": user.username}));
        }
    }

    async fn userinfo_needs_the_openid_scope_and_says_only_what_the_scope_grants(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let userinfo = |token: String| {
            let req = app.http.get(app.url("/oauth/userinfo")).bearer_auth(token);
            async move { req.send().await.unwrap() }
        };

        // A password-grant token has no openid scope.
        let password_token = app.login(&user).await.access_token;
        assert_error(userinfo(password_token).await, 403, "insufficient_scope").await;
        assert_error(userinfo("not-a-token".into()).await, 401, "invalid_token").await;

        // openid alone: only sub.
        let answer = Browser::new(&app).sign_in(&request(&client, &[("scope", Some("openid"))]), &user, &user.password).await;
        let code = param(&redirected(&answer), "code").unwrap().to_owned();
        let tokens: Value = redeem(&app, &client, &code, VERIFIER).await.json().await.unwrap();
        let info: Value = userinfo(tokens["access_token"].as_str().unwrap().to_owned()).await.json().await.unwrap();
        assert_eq!(info.as_object().unwrap().keys().collect::<Vec<_>>(), ["sub"]);
        let id = claims_of(tokens["id_token"].as_str().unwrap());
        assert!(id.get("preferred_username").is_none() && id.get("email").is_none());
    }

    async fn a_code_works_once_and_presented_again_revokes_its_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        let answer = browser.sign_in(&request(&client, &[]), &user, &user.password).await;
        let code = param(&redirected(&answer), "code").unwrap().to_owned();
        let tokens: Value = redeem(&app, &client, &code, VERIFIER).await.json().await.unwrap();

        assert_error(redeem(&app, &client, &code, VERIFIER).await, 400, "invalid_grant").await;

        // The first redemption's tokens are revoked with its session.
        let refresh = tokens["refresh_token"].as_str().unwrap();
        assert_error(app.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &client)]).await, 400, "invalid_grant").await;
        assert_eq!(app.me(tokens["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_code_replayed_by_another_client_without_its_verifier_still_revokes_its_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let other = app_client(&app).await;
        let user = app.seed_user().await;
        let answer = Browser::new(&app).sign_in(&request(&client, &[]), &user, &user.password).await;
        let code = param(&redirected(&answer), "code").unwrap().to_owned();
        let tokens: Value = redeem(&app, &client, &code, VERIFIER).await.json().await.unwrap();

        // Whoever replays it, with whatever verifier, well-formed or not.
        assert_error(redeem(&app, &other, &code, "not a verifier").await, 400, "invalid_grant").await;

        let refresh = tokens["refresh_token"].as_str().unwrap();
        assert_error(app.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &client)]).await, 400, "invalid_grant").await;
        assert_eq!(app.me(tokens["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_code_presented_twice_at_once_starts_one_session_and_leaves_it_revoked(backend: Backend) {
        // Arrange: a code, and two redemptions released together.
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let answer = Browser::new(&app).sign_in(&request(&client, &[]), &user, &user.password).await;
        let code = param(&redirected(&answer), "code").unwrap().to_owned();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));

        // Act
        let attempts = (0..2).map(|_| {
            let (barrier, app, client, code) = (barrier.clone(), &app, &client, &code);
            async move {
                barrier.wait().await;
                let resp = redeem(app, client, code, VERIFIER).await;
                (resp.status(), resp.json::<Value>().await.unwrap())
            }
        });
        let answers = futures_util::future::join_all(attempts).await;

        // Assert: one got tokens, the other invalid_grant, and the tokens are dead.
        let won: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
        assert_eq!(won.len(), 1, "{answers:?}");
        assert!(answers.iter().any(|(s, b)| *s == StatusCode::BAD_REQUEST && b["error"] == "invalid_grant"), "{answers:?}");
        let refresh = won[0]["refresh_token"].as_str().unwrap();
        assert_error(app.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &client)]).await, 400, "invalid_grant").await;
        assert_eq!(app.me(won[0]["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
        // The loser wrote nothing: its session and the code's claim are one transaction.
        assert_eq!(session::Entity::find().count(app.state.db.writer()).await.unwrap(), 1);
    }

    async fn a_code_needs_its_verifier_its_client_and_its_redirect_uri(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let other = app_client(&app).await;
        let user = app.seed_user().await;
        let code = || async {
            let answer = Browser::new(&app).sign_in(&request(&client, &[]), &user, &user.password).await;
            param(&redirected(&answer), "code").unwrap().to_owned()
        };

        let wrong_verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
        assert_error(redeem(&app, &client, &code().await, wrong_verifier).await, 400, "invalid_grant").await;
        assert_error(redeem(&app, &client, &code().await, "short").await, 400, "invalid_grant").await;
        // Of the right length but outside RFC 7636's alphabet, and longer than its 128 characters.
        let plus = format!("{}+", &VERIFIER[..VERIFIER.len() - 1]);
        assert_error(redeem(&app, &client, &code().await, &plus).await, 400, "invalid_grant").await;
        assert_error(redeem(&app, &client, &code().await, &"a".repeat(129)).await, 400, "invalid_grant").await;
        assert_error(redeem(&app, &other, &code().await, VERIFIER).await, 400, "invalid_grant").await;
        let elsewhere = app.token(&[("grant_type", "authorization_code"), ("client_id", &client), ("code", &code().await), ("redirect_uri", "http://127.0.0.1/cb"), ("code_verifier", VERIFIER)]).await;
        assert_error(elsewhere, 400, "invalid_grant").await;
        let without = app.token(&[("grant_type", "authorization_code"), ("client_id", &client), ("code", &code().await), ("code_verifier", VERIFIER)]).await;
        assert_error(without, 400, "invalid_grant").await;
        assert_error(redeem(&app, &client, "no-such-code", VERIFIER).await, 400, "invalid_grant").await;
        let missing = app.token(&[("grant_type", "authorization_code"), ("client_id", &client), ("code", "x")]).await;
        assert_error(missing, 400, "invalid_request").await;
        // None of them started a session or used up its code.
        assert_eq!(app.count("sessions").await, 0);
        assert_eq!(app.count("authorization_codes WHERE used_at IS NOT NULL").await, 0);
    }

    async fn a_wrong_password_an_unknown_user_and_a_disabled_one_get_the_same_page_and_no_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let nobody = TestUser { username: "nobody-here".into(), password: "whatever it is".into() };
        let disabled = app.seed_user().await;
        app.disable_in_database(&disabled).await;

        let mut pages = Vec::new();
        for (who, password) in [(&user, "not the password"), (&nobody, "whatever it is"), (&disabled, disabled.password.as_str())] {
            let mut browser = Browser::new(&app);
            let resp = browser.sign_in(&request(&client, &[]), who, password).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            assert!(resp.headers().get("location").is_none());
            let html = resp.text().await.unwrap();
            assert!(html.contains("Wrong username or password."), "{html}");
            // Everything from the username field on (the anti-CSRF value before it is each browser's own).
            pages.push(html.replace(&who.username, "USERNAME").split("<label for=\"username\">").nth(1).unwrap().to_owned());
        }
        assert_eq!(pages[0], pages[1]);
        assert_eq!(pages[0], pages[2]);
        assert_eq!(app.count("sign_in_sessions").await, 0);
    }

    async fn the_sign_in_page_shares_the_login_limit_and_says_how_long_to_wait(backend: Backend) {
        let app = crate::helpers::spawn_app_with(backend, |s| s.rate_limit.login_per_user = std::num::NonZeroU32::new(2).unwrap()).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;

        // One login at the token endpoint and one on the page use up the user's two.
        app.login(&user).await;
        let signed_in = Browser::new(&app).sign_in(&request(&client, &[]), &user, &user.password).await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let limited = Browser::new(&app).sign_in(&request(&client, &[]), &user, &user.password).await;

        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        let html = limited.text().await.unwrap();
        assert!(html.contains(&format!("Try again in {wait} seconds.")), "{html}");
        assert_error(app.token(&crate::helpers::password_form(&user.username, &user.password)).await, 429, "rate_limited").await;
    }

    async fn a_sign_in_without_the_anti_csrf_token_signs_nobody_in(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        let html = browser.get(&request(&client, &[])).await.text().await.unwrap();
        let form: Vec<(String, String)> = hidden_fields(&html)
            .into_iter()
            .filter(|(k, _)| k != "csrf")
            .chain([("username".to_owned(), user.username.clone()), ("password".to_owned(), user.password.clone())])
            .collect();

        // A forged token, and none at all: refused, no cookie, no redirect.
        for forged in [Some("forged-token-forged-token-forged-token-123"), None] {
            let mut form = form.clone();
            if let Some(forged) = forged {
                form.push(("csrf".into(), forged.into()));
            }
            let resp = browser.post(&form).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN);
            assert!(resp.headers().get("location").is_none());
            assert!(!browser.cookies.iter().any(|(k, _)| k == "portcullis_session"));
        }
        // The right token from another browser (no cookie) is refused too.
        let mut stranger = Browser::new(&app);
        let mut with_token = hidden_fields(&html);
        with_token.push(("username".into(), user.username.clone()));
        with_token.push(("password".into(), user.password.clone()));
        assert_eq!(stranger.post(&with_token).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count("sign_in_sessions").await, 0);
    }

    async fn behind_https_the_cookies_are_secure_and_the_anti_csrf_one_cannot_be_planted(backend: Backend) {
        let app = crate::helpers::spawn_app_with(backend, |s| s.server.issuer = "https://id.example.com".parse().unwrap()).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);

        let page = browser.get(&request(&client, &[])).await;
        let set: Vec<String> = page.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert!(set.iter().any(|c| c.starts_with("__Host-portcullis_csrf=") && c.contains("Secure") && c.contains("Path=/")), "{set:?}");
        let html = page.text().await.unwrap();

        // A cookie without the prefix (one a sibling subdomain could set) does not vouch for the form.
        let mut planted = Browser::new(&app);
        planted.cookies.push(("portcullis_csrf".into(), "planted-planted-planted-planted-planted-pla".into()));
        let mut form: Vec<(String, String)> = hidden_fields(&html).into_iter().filter(|(k, _)| k != "csrf").collect();
        form.extend([("csrf".to_owned(), "planted-planted-planted-planted-planted-pla".to_owned()), ("username".to_owned(), user.username.clone()), ("password".to_owned(), user.password.clone())]);
        assert_eq!(planted.post(&form).await.status(), StatusCode::FORBIDDEN);

        // The browser's own signs in, and the session cookie is Secure too.
        let mut form = hidden_fields(&html);
        form.extend([("username".to_owned(), user.username.clone()), ("password".to_owned(), user.password.clone())]);
        let signed_in = browser.post(&form).await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let session = signed_in.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("portcullis_session=")).unwrap();
        assert!(session.contains("Secure"), "{session}");
    }

    async fn a_signed_in_browser_gets_a_code_at_once_unless_the_client_asks_to_sign_in_again(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        browser.sign_in(&request(&client, &[]), &user, &user.password).await;

        // Single sign-on: straight back with a code, for this client or another.
        let again = browser.get(&request(&client, &[("state", Some("two"))])).await;
        assert_eq!(param(&redirected(&again), "state"), Some("two"));
        assert!(param(&redirected(&again), "code").is_some());
        let silent = browser.get(&request(&client, &[("prompt", Some("none"))])).await;
        assert!(param(&redirected(&silent), "code").is_some());
        // prompt=login and an exceeded max_age show the page again.
        assert_eq!(browser.get(&request(&client, &[("prompt", Some("login"))])).await.status(), StatusCode::OK);
        // A max_age past any date the clock can hold is no limit, not a crash.
        let forever = browser.get(&request(&client, &[("max_age", Some("18446744073709551615"))])).await;
        assert!(param(&redirected(&forever), "code").is_some());
        app.clock.advance(std::time::Duration::from_secs(120));
        assert_eq!(browser.get(&request(&client, &[("max_age", Some("60"))])).await.status(), StatusCode::OK);

        // A browser without a session asking prompt=none hears login_required.
        let stranger = Browser::new(&app).get(&request(&client, &[("prompt", Some("none"))])).await;
        let query = redirected(&stranger);
        assert_eq!(param(&query, "error"), Some("login_required"));
        assert_eq!(param(&query, "state"), Some("st4te"));
    }

    async fn the_admin_scope_is_asked_and_granted_as_at_the_token_endpoint(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app.seed_code_client("console", "openid admin", &[REDIRECT]).await;
        let (user, admin) = (app.seed_user().await, app.seed_admin().await);
        let granted = |answer: &Response| {
            let code = param(&redirected(answer), "code").unwrap().to_owned();
            let (app, client) = (&app, &client);
            async move { redeem(app, client, &code, VERIFIER).await.json::<Value>().await.unwrap()["scope"].clone() }
        };

        // A user who is no admin: asking for it is invalid_scope, at the redirect URI, with state.
        let mut browser = Browser::new(&app);
        let asked = browser.sign_in(&request(&client, &[("scope", Some("openid admin"))]), &user, &user.password).await;
        let query = redirected(&asked);
        assert_eq!(param(&query, "error"), Some("invalid_scope"));
        assert_eq!(param(&query, "state"), Some("st4te"));
        assert!(param(&query, "code").is_none());
        // Not asking gets what they may hold.
        let unasked = browser.get(&request(&client, &[("scope", None)])).await;
        assert_eq!(granted(&unasked).await, "openid");

        // An admin gets it, asked or not.
        let mut browser = Browser::new(&app);
        let asked = browser.sign_in(&request(&client, &[("scope", Some("openid admin"))]), &admin, &admin.password).await;
        assert_eq!(granted(&asked).await, "admin openid");
        let unasked = browser.get(&request(&client, &[("scope", None)])).await;
        assert_eq!(granted(&unasked).await, "admin openid");
    }

    async fn a_password_change_ends_the_sign_in_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        browser.sign_in(&request(&client, &[]), &user, &user.password).await;
        let token = app.login(&user).await.access_token;

        let changed = app.change_password(&token, &user.password, "a brand new passphrase").await;
        assert_eq!(changed.status(), StatusCode::NO_CONTENT);

        assert_eq!(browser.get(&request(&client, &[])).await.status(), StatusCode::OK, "the sign-in page again");
    }

    async fn a_sign_in_racing_a_password_change_never_outlives_it(backend: Backend) {
        // Arrange: each round, browsers holding the sign-in form submit the old password as it changes.
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let mut raced = 0;
        for round in 0..8 {
            let user = app.seed_user().await;
            let token = app.login(&user).await.access_token;
            let mut browsers = Vec::new();
            for _ in 0..4 {
                let mut browser = Browser::new(&app);
                let html = browser.get(&request(&client, &[])).await.text().await.unwrap();
                let mut form = hidden_fields(&html);
                form.extend([("username".to_owned(), user.username.clone()), ("password".to_owned(), user.password.clone())]);
                browsers.push((browser, form));
            }
            let barrier = tokio::sync::Barrier::new(browsers.len() + 1);
            let sign_ins = futures_util::future::join_all(browsers.iter_mut().map(|(browser, form)| {
                let barrier = &barrier;
                async move {
                    barrier.wait().await;
                    browser.post(form).await.status()
                }
            }));
            let change = async {
                barrier.wait().await;
                app.change_password(&token, &user.password, "a brand new passphrase").await.status()
            };
            let (statuses, changed) = tokio::join!(sign_ins, change);
            assert_eq!(changed, StatusCode::NO_CONTENT);

            // Assert: whichever browsers the old password signed in, none is signed in after the change.
            for ((browser, _), status) in browsers.iter_mut().zip(statuses) {
                if status != StatusCode::SEE_OTHER {
                    continue;
                }
                raced += 1;
                let again = browser.get(&request(&client, &[])).await;
                assert_eq!(again.status(), StatusCode::OK, "round {round}: a sign-in outlived the password change");
            }
        }
        assert!(raced > 0, "some sign-ins completed with the old password");
    }

    async fn a_sign_in_session_starts_only_from_the_user_as_their_password_was_checked(backend: Backend) {
        let app = spawn_app(backend).await;
        let (changed, disabled) = (app.seed_user().await, app.seed_user().await);
        for (user, change) in [(&changed, "password"), (&disabled, "disable")] {
            // The user as the sign-in read them, before the change lands.
            let as_checked = app.state.users.find_by_username(&user.username).await.unwrap().unwrap();
            match change {
                "password" => app.change_password_in_database(user).await,
                _ => app.disable_in_database(user).await,
            }

            let started = app.state.authorizer.sign_in(&as_checked).await;

            assert!(matches!(started, Err(portcullis::error::Error::InvalidGrant(_))), "{change}");
        }
        assert_eq!(app.count("sign_in_sessions").await, 0);
    }

    async fn a_disabled_user_s_sign_in_session_ends(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        browser.sign_in(&request(&client, &[]), &user, &user.password).await;

        app.disable_in_database(&user).await;

        assert_eq!(browser.get(&request(&client, &[])).await.status(), StatusCode::OK, "the sign-in page again");
        let silent = browser.get(&request(&client, &[("prompt", Some("none"))])).await;
        assert_eq!(param(&redirected(&silent), "error"), Some("login_required"));
    }

    async fn housekeeping_deletes_codes_and_sign_in_sessions_past_their_lifetime(backend: Backend) {
        use portcullis::store::housekeeping::purge;
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        browser.sign_in(&request(&client, &[]), &user, &user.password).await;
        let ttl = app.state.settings.access_ttl();

        let now = purge(&app.state.db, chrono::Utc::now(), ttl).await.unwrap();
        let later = chrono::Utc::now() + chrono::Duration::seconds(app.settings.login.session_ttl as i64 + 1);
        let after = purge(&app.state.db, later, ttl).await.unwrap();

        assert_eq!((now.authorization_codes, now.sign_in_sessions), (0, 0), "both still live");
        assert_eq!((after.authorization_codes, after.sign_in_sessions), (1, 1));
    }

    async fn logging_out_everywhere_ends_the_sign_in_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        browser.sign_in(&request(&client, &[]), &user, &user.password).await;
        assert_eq!(browser.get(&request(&client, &[])).await.status(), StatusCode::SEE_OTHER);
        let token = app.login(&user).await.access_token;

        let resp = app.http.delete(app.url("/users/me/sessions")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);

        assert_eq!(browser.get(&request(&client, &[])).await.status(), StatusCode::OK, "the sign-in page again");
    }
}

on_both_databases! {
    async fn an_unknown_client_or_redirect_uri_gets_a_page_and_never_a_redirect(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let mut browser = Browser::new(&app);
        for (case, params) in [
            ("unknown client", request("no-such-client", &[])),
            ("no client", request(&client, &[("client_id", None)])),
            ("unregistered", request(&client, &[("redirect_uri", Some("https://evil.example/cb"))])),
            ("extra slash", request(&client, &[("redirect_uri", Some("https://app.example.com/callback/"))])),
            ("other case", request(&client, &[("redirect_uri", Some("https://APP.example.com/callback"))])),
            ("fragment", request(&client, &[("redirect_uri", Some("https://app.example.com/callback#x"))])),
            ("userinfo", request(&client, &[("redirect_uri", Some("https://u@app.example.com/callback"))])),
            ("other scheme", request(&client, &[("redirect_uri", Some("http://app.example.com/callback"))])),
            ("other port", request(&client, &[("redirect_uri", Some("https://app.example.com:8443/callback"))])),
            ("two registered, none named", request(&client, &[("redirect_uri", None)])),
            ("oversized client_id", request(&"c".repeat(5000), &[])),
            ("oversized redirect_uri", request(&client, &[("redirect_uri", Some(&format!("{REDIRECT}{}", "a".repeat(5000))))])),
        ] {
            let resp = browser.get(&params).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{case}");
            assert!(resp.headers().get("location").is_none(), "{case}");
            assert_eq!(resp.headers()["x-frame-options"], "DENY", "{case}");
        }
        let mut repeated = request(&client, &[]);
        repeated.push(("redirect_uri".into(), "https://evil.example/cb".into()));
        assert_eq!(browser.get(&repeated).await.status(), StatusCode::BAD_REQUEST);
        // A loopback redirect URI matches on any port (RFC 8252 §7.3).
        let loopback = browser.get(&request(&client, &[("redirect_uri", Some("http://127.0.0.1:53117/cb"))])).await;
        assert_eq!(loopback.status(), StatusCode::OK);
    }

    async fn every_other_error_goes_back_to_the_client_with_state_and_iss(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let long = "s".repeat(4000);
        let mut browser = Browser::new(&app);
        for (case, params, error) in [
            ("no PKCE", request(&client, &[("code_challenge", None), ("code_challenge_method", None)]), "invalid_request"),
            ("plain", request(&client, &[("code_challenge_method", Some("plain"))]), "invalid_request"),
            ("no method", request(&client, &[("code_challenge_method", None)]), "invalid_request"),
            ("bad challenge", request(&client, &[("code_challenge", Some("abc"))]), "invalid_request"),
            ("no response_type", request(&client, &[("response_type", None)]), "invalid_request"),
            ("token", request(&client, &[("response_type", Some("token"))]), "unsupported_response_type"),
            ("scope", request(&client, &[("scope", Some("openid admin"))]), "invalid_scope"),
            ("prompt", request(&client, &[("prompt", Some("consent"))]), "invalid_request"),
            ("max_age", request(&client, &[("max_age", Some("-1"))]), "invalid_request"),
            ("long nonce", request(&client, &[("nonce", Some(long.as_str()))]), "invalid_request"),
            ("long login_hint", request(&client, &[("login_hint", Some(long.as_str()))]), "invalid_request"),
            ("long challenge", request(&client, &[("code_challenge", Some(long.as_str()))]), "invalid_request"),
            ("long scope", request(&client, &[("scope", Some(&format!("openid {long}")))]), "invalid_scope"),
            ("long response_type", request(&client, &[("response_type", Some(long.as_str()))]), "unsupported_response_type"),
            ("long prompt", request(&client, &[("prompt", Some(long.as_str()))]), "invalid_request"),
            ("long max_age", request(&client, &[("max_age", Some(&"9".repeat(4000)))]), "invalid_request"),
        ] {
            let query = redirected(&browser.get(&params).await);
            assert_eq!(param(&query, "error"), Some(error), "{case}");
            assert_eq!(param(&query, "state"), Some("st4te"), "{case}");
            assert_eq!(param(&query, "iss"), Some(app.settings.issuer().as_str()), "{case}");
            assert!(param(&query, "code").is_none(), "{case}");
        }
        assert_eq!(app.count("authorization_codes").await, 0, "no refusal wrote a code");
        // A 4,000-character state is refused, and not echoed.
        let query = redirected(&browser.get(&request(&client, &[("state", Some(long.as_str()))])).await);
        assert_eq!(param(&query, "error"), Some("invalid_request"));
        assert_eq!(param(&query, "state"), None);
        // Any parameter but client_id and redirect_uri (a page, above) repeated, even with the same value.
        for name in ["response_type", "scope", "state", "code_challenge", "code_challenge_method", "nonce", "prompt", "max_age", "login_hint"] {
            let mut repeated = request(&client, &[("nonce", Some("n0nce")), ("prompt", Some("login")), ("max_age", Some("60")), ("login_hint", Some("someone"))]);
            let value = repeated.iter().find(|(k, _)| k == name).unwrap().1.clone();
            repeated.push((name.into(), value));
            let query = redirected(&browser.get(&repeated).await);
            assert_eq!(param(&query, "error"), Some("invalid_request"), "{name}");
            assert!(param(&query, "error_description").unwrap().contains(name), "{name}");
        }
        // A client registered without the grant hears it at its own redirect URI.
        let password_only = "password-only";
        app.state
            .clients
            .create(NewClient {
                id: password_only,
                secret_hash: None,
                grant_types: &[GrantType::Password],
                scopes: &Scope::parse("openid profile").unwrap(),
                redirect_uris: &[RedirectUri::parse(REDIRECT).unwrap()],
                post_logout_redirect_uris: &[],
            })
            .await
            .unwrap();
        let query = redirected(&browser.get(&request(password_only, &[])).await);
        assert_eq!(param(&query, "error"), Some("unauthorized_client"));
    }
}
