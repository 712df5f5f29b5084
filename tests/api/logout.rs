//! RP-initiated logout (`/oauth/logout`) and the sign-up page (`/signup`): the pages, their anti-CSRF
//! tokens, what logging out ends (and what it leaves alone), on one instance and across two.

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::{
    authorization_code::{REDIRECT, app_client, param, redeem, redirected, request},
    helpers::{
        Browser, TestApp, TestUser, VERIFIER, assert_error, hidden_fields, spawn_app,
        spawn_app_with, unescape,
    },
};

const SIGNED_OUT: &str = "https://app.example.com/signed-out";

/// A code-flow client that may be sent back to [`SIGNED_OUT`].
async fn logout_client(app: &TestApp) -> String {
    app.seed_logout_client("rp", "openid profile", &[REDIRECT], &[SIGNED_OUT])
        .await
}

/// Signs `browser` in for `client` and redeems the code: the token response.
async fn signed_in(
    app: &TestApp,
    browser: &mut Browser<'_>,
    client: &str,
    user: &TestUser,
) -> Value {
    let answer = browser
        .sign_in(&request(client, &[]), user, &user.password)
        .await;
    let code = param(&redirected(&answer), "code").unwrap().to_owned();
    redeem(app, client, &code, VERIFIER)
        .await
        .json()
        .await
        .unwrap()
}

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the browser still has a usable sign-in session: `prompt=none` gets a code.
async fn still_signed_in(browser: &mut Browser<'_>, client: &str) -> bool {
    let silent = browser
        .get(&request(client, &[("prompt", Some("none"))]))
        .await;
    param(&redirected(&silent), "code").is_some()
}

async fn refresh(app: &TestApp, client: &str, tokens: &Value) -> Response {
    app.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", client),
    ])
    .await
}

fn assert_page(resp: &Response, status: StatusCode) {
    assert_eq!(resp.status(), status);
    let headers = resp.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.get("location").is_none(), "a page, not a redirect");
}

fn session_cookie_cleared(resp: &Response) -> bool {
    resp.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap();
        c.starts_with("portcullis_session=;") && c.contains("Max-Age=0")
    })
}

on_both_databases! {
    async fn logout_without_a_hint_asks_first_then_ends_this_browser_and_the_sessions_it_started(backend: Backend) {
        // Arrange: a browser sign-in with its tokens, and a password-grant session of the same user.
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        let tokens = signed_in(&app, &mut browser, &client, &user).await;
        let other = app.login(&user).await;

        // Act 1: no hint, so a confirmation page first; nothing is ended by showing it.
        let page = browser.get_at("/oauth/logout", &[]).await;
        assert_page(&page, StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains(&user.username), "{html}");
        assert!(still_signed_in(&mut browser, &client).await);

        // Act 2: the confirmation.
        let done = browser.post_to("/oauth/logout", &hidden_fields(&html)).await;

        // Assert: the signed-out page, the cookie removed, the browser's session and its tokens ended.
        assert!(session_cookie_cleared(&done));
        assert_page(&done, StatusCode::OK);
        assert!(!still_signed_in(&mut browser, &client).await);
        assert_error(refresh(&app, &client, &tokens).await, 400, "invalid_grant").await;
        assert_eq!(app.me(tokens["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
        // The password-grant session was not started through this browser: it lives on.
        assert_eq!(app.me(&other.access_token).await.status(), StatusCode::OK);
        assert_eq!(app.refresh(&other.refresh_token.unwrap()).await.status(), StatusCode::OK);
    }

    async fn a_code_issued_before_the_logout_starts_no_session_after_it(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        let answer = browser.sign_in(&request(&client, &[]), &user, &user.password).await;
        let code = param(&redirected(&answer), "code").unwrap().to_owned();

        let html = browser.get_at("/oauth/logout", &[]).await.text().await.unwrap();
        browser.post_to("/oauth/logout", &hidden_fields(&html)).await;

        assert_error(redeem(&app, &client, &code, VERIFIER).await, 400, "invalid_grant").await;
        // Nothing is written: no session, and the code is not even claimed.
        assert_eq!(app.count("sessions").await, 0);
        assert_eq!(app.count("authorization_codes WHERE used_at IS NULL").await, 1);
    }

    async fn a_valid_id_token_hint_signs_out_at_once_and_goes_back_with_state(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = logout_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        let tokens = signed_in(&app, &mut browser, &client, &user).await;
        let hint = tokens["id_token"].as_str().unwrap();

        let resp = browser.get_at("/oauth/logout", &pairs(&[("id_token_hint", hint), ("post_logout_redirect_uri", SIGNED_OUT), ("state", "bye")])).await;

        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()["location"], format!("{SIGNED_OUT}?state=bye"));
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert!(session_cookie_cleared(&resp));
        assert!(!still_signed_in(&mut browser, &client).await);
        assert_error(refresh(&app, &client, &tokens).await, 400, "invalid_grant").await;
    }

    async fn logout_never_redirects_where_the_client_did_not_register(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = logout_client(&app).await;
        let stranger_client = logout_client(&app).await;
        let user = app.seed_user().await;

        // Each case in a browser of its own: (case, parameters with HINT for its ID token, whether that
        // hint lets it sign out without asking).
        const HINT: &str = "the browser's own ID token";
        const TAMPERED: &str = "the browser's own ID token, its signature altered";
        for (case, params, at_once) in [
            ("unregistered URI", vec![("id_token_hint", HINT), ("post_logout_redirect_uri", "https://evil.example/")], true),
            ("a registered URI with a different case", vec![("id_token_hint", HINT), ("post_logout_redirect_uri", "https://app.example.com/Signed-out")], true),
            ("a client_id that is not the hint's audience", vec![("id_token_hint", HINT), ("client_id", stranger_client.as_str()), ("post_logout_redirect_uri", SIGNED_OUT)], true),
            ("no client to check it against", vec![("post_logout_redirect_uri", SIGNED_OUT)], false),
            ("unknown client_id", vec![("client_id", "nobody"), ("post_logout_redirect_uri", SIGNED_OUT)], false),
            ("a tampered hint", vec![("id_token_hint", TAMPERED), ("post_logout_redirect_uri", SIGNED_OUT)], false),
            ("a hint that is no token", vec![("id_token_hint", "x.y.z"), ("post_logout_redirect_uri", SIGNED_OUT)], false),
        ] {
            let mut browser = Browser::new(&app);
            let tokens = signed_in(&app, &mut browser, &client, &user).await;
            let hint = tokens["id_token"].as_str().unwrap();
            let tampered = format!("{}AAAA", &hint[..hint.len() - 4]);
            let params: Vec<(String, String)> = params
                .iter()
                .map(|&(k, v)| (k.to_owned(), match v { HINT => hint.to_owned(), TAMPERED => tampered.clone(), v => v.to_owned() }))
                .collect();

            let mut resp = browser.get_at("/oauth/logout", &params).await;
            if !at_once {
                // Asked first, and signed out only once the user confirms.
                assert_page(&resp, StatusCode::OK);
                assert!(!session_cookie_cleared(&resp), "{case}");
                let html = resp.text().await.unwrap();
                assert!(still_signed_in(&mut browser, &client).await, "{case}");
                resp = browser.post_to("/oauth/logout", &hidden_fields(&html)).await;
            }

            // Signed out, and shown the signed-out page rather than sent anywhere.
            assert_page(&resp, StatusCode::OK);
            assert!(resp.headers().get("location").is_none(), "{case}");
            assert!(session_cookie_cleared(&resp), "{case}");
            assert!(!still_signed_in(&mut browser, &client).await, "{case}");
        }

        // A malformed request is refused, and signs nobody out.
        let mut browser = Browser::new(&app);
        signed_in(&app, &mut browser, &client, &user).await;
        let repeated = pairs(&[("client_id", client.as_str()), ("client_id", client.as_str())]);
        let resp = browser.get_at("/oauth/logout", &repeated).await;
        assert_page(&resp, StatusCode::BAD_REQUEST);
        assert!(!session_cookie_cleared(&resp));
        assert!(still_signed_in(&mut browser, &client).await, "nobody was signed out");
    }

    async fn a_confirmation_without_the_anti_csrf_token_signs_nobody_out(backend: Backend) {
        let app = spawn_app(backend).await;
        let client = app_client(&app).await;
        let user = app.seed_user().await;
        let mut browser = Browser::new(&app);
        signed_in(&app, &mut browser, &client, &user).await;
        let html = browser.get_at("/oauth/logout", &[]).await.text().await.unwrap();
        let without: Vec<(String, String)> = hidden_fields(&html).into_iter().filter(|(k, _)| k != "csrf").collect();

        for forged in [Some("forged-token-forged-token-forged-token-123"), None] {
            let mut form = without.clone();
            if let Some(forged) = forged {
                form.push(("csrf".into(), forged.into()));
            }
            let resp = browser.post_to("/oauth/logout", &form).await;
            assert_page(&resp, StatusCode::FORBIDDEN);
        }
        // A hint of another user does not sign this one out without asking either.
        let someone = app.seed_user().await;
        let theirs = signed_in(&app, &mut Browser::new(&app), &client, &someone).await;
        let asked = browser.get_at("/oauth/logout", &pairs(&[("id_token_hint", theirs["id_token"].as_str().unwrap())])).await;
        assert_page(&asked, StatusCode::OK);
        assert!(still_signed_in(&mut browser, &client).await);
    }

    async fn single_sign_on_and_logout_hold_across_two_instances(backend: Backend) {
        let first = spawn_app(backend).await;
        let second = first.another_instance().await;
        let client = logout_client(&first).await;
        let user = first.seed_user().await;
        let mut at_first = Browser::new(&first);
        let tokens = signed_in(&first, &mut at_first, &client, &user).await;
        let access = tokens["access_token"].as_str().unwrap();

        // Signed in at the first instance, the browser is signed in at the second.
        let mut at_second = at_first.at(&second);
        assert!(still_signed_in(&mut at_second, &client).await);

        // Signed out at the second, it is signed out at the first, and its tokens die on both.
        let hint = tokens["id_token"].as_str().unwrap();
        let out = at_second.get_at("/oauth/logout", &pairs(&[("id_token_hint", hint)])).await;
        assert_page(&out, StatusCode::OK);
        let mut at_first = at_second.at(&first);
        assert!(!still_signed_in(&mut at_first, &client).await);
        assert_error(refresh(&first, &client, &tokens).await, 400, "invalid_grant").await;
        assert_eq!(second.me(access).await.status(), StatusCode::UNAUTHORIZED);
        // The first instance copies the revocation log into its deny list on its next pass (or reads it in
        // the shared Redis already).
        first.state.revoker.sync().await.unwrap();
        assert_eq!(first.me(access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn the_sign_up_page_creates_the_account_and_continues_the_authorization(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.registration.enabled = true).await;
        let client = app_client(&app).await;
        let mut browser = Browser::new(&app);

        // The sign-in page links to the sign-up page, which carries the authorization request.
        let sign_in = browser.get(&request(&client, &[])).await.text().await.unwrap();
        let start = sign_in.find("href=\"/signup?").expect("a sign-up link") + "href=\"".len();
        let link = unescape(&sign_in[start..start + sign_in[start..].find('"').unwrap()]);
        let page = browser.get_at(&link, &[]).await;
        assert_page(&page, StatusCode::OK);
        let html = page.text().await.unwrap();
        for field in ["username", "password", "email"] {
            assert!(html.contains(&format!("name=\"{field}\"")), "{field}");
        }
        let form = |username: &str, password: &str| {
            let mut form = hidden_fields(&html);
            form.extend(pairs(&[("username", username), ("password", password), ("email", "")]));
            form
        };

        // A weak password and a taken username re-show the form with the reason.
        let weak = browser.post_to("/signup", &form("newcomer", "short")).await;
        assert_page(&weak, StatusCode::UNPROCESSABLE_ENTITY);
        let taken = app.seed_user().await;
        let conflict = browser.post_to("/signup", &form(&taken.username, "a long enough passphrase")).await;
        assert_page(&conflict, StatusCode::CONFLICT);
        assert!(conflict.text().await.unwrap().contains("taken"));
        // An authorization request that cannot go on creates nobody.
        let mut unknown = form("stray", "a long enough passphrase");
        unknown.retain(|(k, _)| k != "client_id");
        unknown.push(("client_id".into(), "no-such-client".into()));
        assert_page(&browser.post_to("/signup", &unknown).await, StatusCode::BAD_REQUEST);
        // Without the anti-CSRF token nobody is created.
        let forged: Vec<_> = form("forger", "a long enough passphrase").into_iter().filter(|(k, _)| k != "csrf").collect();
        assert_eq!(browser.post_to("/signup", &forged).await.status(), StatusCode::FORBIDDEN);

        // Success: signed in, and on to the client with a code that redeems.
        let done = browser.post_to("/signup", &form("newcomer", "a long enough passphrase")).await;
        let query = redirected(&done);
        assert_eq!(param(&query, "state"), Some("st4te"));
        let tokens: Value = redeem(&app, &client, param(&query, "code").unwrap(), VERIFIER).await.json().await.unwrap();
        let me: Value = app.me(tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!(me["username"], "newcomer");
        assert!(still_signed_in(&mut browser, &client).await);
        assert_eq!(app.count("users").await, 2, "the newcomer and the taken name only");
    }

    async fn without_open_registration_there_is_no_sign_up_page(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.registration.enabled = false).await;
        let client = app_client(&app).await;
        let sign_in = Browser::new(&app).get(&request(&client, &[])).await.text().await.unwrap();
        assert!(!sign_in.contains("/signup"), "no link");
        assert_eq!(app.get("/signup").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(app.http.post(app.url("/signup")).form(&[("username", "x")]).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }
}
