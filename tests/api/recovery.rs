//! Account recovery and verified addresses, against a real SMTP server (aiosmtpd) and the drop folder:
//! each message's recipient, subject and link; the reset and verification flows over HTTP and through
//! their pages; the limits; tokens of every shape.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Browser, SmtpSink, TestApp, assert_error, hidden_fields, read_messages, spawn_app_with,
    with_deny,
};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// A server mailing through `sink`.
async fn app_with_mail(backend: crate::helpers::Backend, sink: &SmtpSink) -> TestApp {
    let url = sink.url();
    spawn_app_with(backend, move |s| {
        s.mail.smtp_url = Some(url);
        s.registration.enabled = true;
        // The per-account budget is the limits test's subject, not these tests'.
        s.rate_limit.mail_per_account = 100;
    })
    .await
}

async fn register(app: &TestApp, username: &str, email: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/users"))
        .json(&json!({"username": username, "password": PASSWORD, "email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.unwrap()
}

async fn post_json(app: &TestApp, path: &str, body: Value) -> Response {
    app.http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn login(app: &TestApp, username: &str, password: &str) -> Response {
    app.token(&[
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ])
    .await
}

on_both_databases! {
    async fn an_address_is_verified_by_its_link_and_a_change_tells_the_old_one(backend: Backend) {
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        let issuer = app.settings.issuer();
        let created = register(&app, "bob", "bob@example.com").await;
        assert_eq!(created["email_verified"], false);
        let token = login(&app, "bob", PASSWORD).await.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();

        // The link sent at registration, through its page: the GET shows a button, the POST confirms.
        let mails = sink.wait_for(1).await;
        assert_eq!(mails[0].to, "bob@example.com");
        assert!(mails[0].subject.starts_with("Confirm your email address on "));
        let link = mails[0].token(&issuer, "/verify-email").expect("a verification link");
        let mut browser = Browser::new(&app);
        let page = browser.get_at("/verify-email", &[("token".into(), link.clone())]).await;
        assert_eq!(page.status(), StatusCode::OK);
        let form = hidden_fields(&page.text().await.unwrap());
        let me: Value = app.me(&token).await.json().await.unwrap();
        assert_eq!(me["email_verified"], false, "opening the link changed nothing");
        assert_eq!(browser.post_to("/verify-email", &form).await.status(), StatusCode::OK);
        let me: Value = app.me(&token).await.json().await.unwrap();
        assert_eq!(me["email_verified"], true);
        let resend = app.http.post(app.url("/users/me/email-verification")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resend.status(), StatusCode::CONFLICT);
        // A verification token is nothing at the reset endpoint, and a used one nothing anywhere.
        let crossed = post_json(&app, "/users/password-reset/confirm", json!({"token": link, "new_password": NEW_PASSWORD})).await;
        assert_error(crossed, 400, "invalid_token").await;
        assert_error(post_json(&app, "/users/email-verification/confirm", json!({"token": link})).await, 400, "invalid_token").await;

        // A new address: unverified, a link to it and a notice to the old one; a reset link sent to the
        // old address before the change no longer works.
        assert_eq!(post_json(&app, "/users/password-reset", json!({"username": "bob"})).await.status(), StatusCode::ACCEPTED);
        let old_reset = sink.wait_for(2).await[1].token(&issuer, "/password-reset").expect("a reset link");
        let patch = |body: Value| app.http.patch(app.url("/users/me")).bearer_auth(&token).json(&body).send();
        let changed = patch(json!({"email": "robert@example.com"})).await.unwrap();
        assert_eq!(changed.status(), StatusCode::OK);
        let changed: Value = changed.json().await.unwrap();
        assert_eq!((changed["email"].as_str(), changed["email_verified"].as_bool()), (Some("robert@example.com"), Some(false)));
        let mails = sink.wait_for(4).await;
        let recipients: Vec<&str> = mails[2..].iter().map(|m| m.to.as_str()).collect();
        assert!(recipients.contains(&"bob@example.com") && recipients.contains(&"robert@example.com"), "{recipients:?}");
        let notice = mails[2..].iter().find(|m| m.to == "bob@example.com").unwrap();
        assert!(notice.text.contains("robert@example.com") && notice.token(&issuer, "/verify-email").is_none());
        let new_link = mails[2..].iter().find(|m| m.to == "robert@example.com").unwrap().token(&issuer, "/verify-email").unwrap();
        let stale = post_json(&app, "/users/password-reset/confirm", json!({"token": old_reset, "new_password": NEW_PASSWORD})).await;
        assert_error(stale, 400, "invalid_token").await;
        assert_eq!(post_json(&app, "/users/email-verification/confirm", json!({"token": new_link})).await.status(), StatusCode::NO_CONTENT);

        // Refused addresses: taken, invalid, an attempt at header injection, missing.
        register(&app, "carol", "carol@example.com").await;
        assert_eq!(patch(json!({"email": "Carol@Example.com"})).await.unwrap().status(), StatusCode::CONFLICT);
        for bad in [json!({"email": "not an address"}), json!({"email": "x@example.com\r\nBcc: eve@example.com"}), json!({"email": null}), json!({}), json!({"email": format!("{}@example.com", "a".repeat(10_000))})] {
            assert_eq!(patch(bad.clone()).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
    }

    async fn tokens_of_every_shape_are_refused_with_invalid_token(backend: Backend) {
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        let long = "a".repeat(5000);
        for token in ["", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "é".repeat(43).as_str(), "../../etc/passwd", long.as_str(), "AAAA AAAA"] {
            for path in ["/users/password-reset/confirm", "/users/email-verification/confirm"] {
                let resp = post_json(&app, path, json!({"token": token, "new_password": NEW_PASSWORD})).await;
                assert_error(resp, 400, "invalid_token").await;
            }
            let page = app.http.get(app.url("/password-reset")).query(&[("token", token)]).send().await.unwrap();
            assert!(page.status() == StatusCode::BAD_REQUEST || (token.is_empty() && page.status() == StatusCode::OK), "{token:.20}: {}", page.status());
        }
        assert!(sink.messages().is_empty());
    }

    async fn without_an_smtp_url_messages_land_in_the_drop_folder(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.registration.enabled = true).await;
        register(&app, "erin", "erin@example.com").await;
        let dir = app.settings.mail.dir.clone();
        crate::helpers::eventually(std::time::Duration::from_secs(10), "a message in the folder", || {
            let dir = dir.clone();
            // A file may be seen before it is whole.
            async move { read_messages(&dir).first().is_some_and(|m| m.text.contains("token=")) }
        })
        .await;
        let mail = &read_messages(&dir)[0];
        assert_eq!(mail.to, "erin@example.com");
        assert!(mail.token(&app.settings.issuer(), "/verify-email").is_some());
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| e.unwrap().path().extension().is_some_and(|x| x == "eml")));
    }

    async fn with_verified_email_required_an_unverified_user_cannot_sign_in(backend: Backend) {
        let sink = SmtpSink::start();
        let url = sink.url();
        let app = spawn_app_with(backend, move |s| {
            s.mail.smtp_url = Some(url);
            s.registration.require_verified_email = true;
        })
        .await;
        register(&app, "frank", "frank@example.com").await;

        let refused = assert_error(login(&app, "frank", PASSWORD).await, 400, "invalid_grant").await;
        assert!(refused["error_description"].as_str().unwrap().contains("not verified"), "{refused}");
        // A wrong password still hears only the usual answer.
        let wrong = assert_error(login(&app, "frank", "wrong password here").await, 400, "invalid_grant").await;
        assert!(!wrong["error_description"].as_str().unwrap().contains("verified"));

        let link = sink.wait_for(1).await[0].token(&app.settings.issuer(), "/verify-email").unwrap();
        assert_eq!(post_json(&app, "/users/email-verification/confirm", json!({"token": link})).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(login(&app, "frank", PASSWORD).await.status(), StatusCode::OK);
    }
}

on_every_backend! {
    async fn the_limits_hold_per_address_and_per_account_without_telling(backend: Backend, deny: Deny) {
        // Arrange: with Redis, two instances that share the per-address count; without, one.
        let sink = SmtpSink::start();
        let url = sink.url();
        let app = spawn_app_with(backend, move |s| {
            with_deny(s, deny);
            s.mail.smtp_url = Some(url);
            s.rate_limit.mail_per_ip = std::num::NonZeroU32::new(3).unwrap();
            s.rate_limit.mail_per_account = 3;
        })
        .await;
        let other;
        let second = if deny == crate::helpers::Deny::Redis {
            other = app.another_instance().await;
            &other
        } else {
            &app
        };
        // Redis counts in one-minute windows: start well inside one, on both instances' clocks.
        use portcullis::ports::Clock as _;
        let into_minute = app.clock.now().timestamp().rem_euclid(60);
        if into_minute > 50 {
            let next = std::time::Duration::from_secs((61 - into_minute) as u64);
            app.clock.advance(next);
            if deny == crate::helpers::Deny::Redis {
                second.clock.advance(next);
            }
        }
        register(&app, "dave", "dave@example.com").await; // message 1 of 3 this hour

        // Per account: two more resets are sent, the third is not; every answer is the same 202.
        for instance in [&app, second, &app] {
            let resp = post_json(instance, "/users/password-reset", json!({"username": "dave"})).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
        }
        // Per address: the fourth request from here in a minute is refused, with the wait.
        let refused = post_json(second, "/users/password-reset", json!({"username": "dave"})).await;
        assert!(refused.headers().contains_key("retry-after"));
        assert_error(refused, 429, "rate_limited").await;

        // Once every request is decided (three sent, one held back), the sink holds exactly three.
        let instances = [&app, second];
        let count = |name| mail_count(if deny == crate::helpers::Deny::Redis { &instances } else { &instances[..1] }, name);
        crate::helpers::eventually(std::time::Duration::from_secs(10), "three sent and one held", || async {
            count("sent") == 3 && count("held") == 1
        })
        .await;
        assert_eq!(sink.messages().len(), 3, "the account's budget is spent");
    }
}

on_both_databases! {
    async fn the_reset_pages_ask_for_the_address_then_for_the_new_password(backend: Backend) {
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        register(&app, "grace", "grace@example.com").await;
        sink.wait_for(1).await;
        let mut browser = Browser::new(&app);

        // The sign-in page links here; the form asks for the address and answers alike for anyone.
        let client = crate::authorization_code::app_client(&app).await;
        let sign_in = browser.get(&crate::authorization_code::request(&client, &[])).await.text().await.unwrap();
        assert!(sign_in.contains("href=\"/password-reset\""), "a forgot-password link");
        let page = browser.get_at("/password-reset", &[]).await;
        assert_eq!(page.status(), StatusCode::OK);
        let mut form = hidden_fields(&page.text().await.unwrap());
        let forged: Vec<_> = [("email".to_owned(), "grace@example.com".to_owned())].into();
        assert_eq!(browser.post_to("/password-reset", &forged).await.status(), StatusCode::FORBIDDEN);
        form.push(("email".into(), "grace@example.com".into()));
        let asked = browser.post_to("/password-reset", &form).await;
        assert_eq!(asked.status(), StatusCode::OK);
        let mut stranger = form.clone();
        stranger.retain(|(k, _)| k != "email");
        stranger.push(("email".into(), "nobody@example.com".into()));
        let other = browser.post_to("/password-reset", &stranger).await;
        assert_eq!(asked.text().await.unwrap(), other.text().await.unwrap(), "the same page for anyone");

        // The link's page sets the new password; a refused one shows the reason and keeps the link.
        let token = sink.wait_for(2).await[1].token(&app.settings.issuer(), "/password-reset").unwrap();
        let page = browser.get_at("/password-reset", &[("token".into(), token.clone())]).await;
        let form = hidden_fields(&page.text().await.unwrap());
        let with = |password: &str| {
            let mut form = form.clone();
            form.push(("new_password".into(), password.into()));
            form
        };
        assert_eq!(browser.post_to("/password-reset", &with("short")).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let done = browser.post_to("/password-reset", &with(NEW_PASSWORD)).await;
        assert_eq!(done.status(), StatusCode::OK);
        assert!(done.text().await.unwrap().contains("Password changed"));
        assert_eq!(login(&app, "grace", NEW_PASSWORD).await.status(), StatusCode::OK);
        assert_eq!(browser.post_to("/password-reset", &with("yet another passphrase")).await.status(), StatusCode::BAD_REQUEST);
    }

    async fn with_verified_email_required_the_pages_say_so(backend: Backend) {
        let sink = SmtpSink::start();
        let url = sink.url();
        let app = spawn_app_with(backend, move |s| {
            s.mail.smtp_url = Some(url);
            s.registration.enabled = true;
            s.registration.require_verified_email = true;
        })
        .await;
        let client = crate::authorization_code::app_client(&app).await;
        let request = crate::authorization_code::request(&client, &[]);
        let mut browser = Browser::new(&app);

        // Signing up asks the user to open the link, and signs nobody in.
        let page = browser.get_at("/signup", &request).await.text().await.unwrap();
        let mut form = hidden_fields(&page);
        form.extend([("username".into(), "henry".into()), ("password".into(), PASSWORD.into()), ("email".into(), "henry@example.com".into())]);
        let signed_up = browser.post_to("/signup", &form).await;
        assert_eq!(signed_up.status(), StatusCode::OK);
        assert!(signed_up.text().await.unwrap().contains("Check your mail"));
        assert!(!browser.cookies.iter().any(|(k, _)| k == "portcullis_session"));

        // The sign-in page refuses the unverified user, saying why, once the password is right.
        let user = crate::helpers::TestUser { username: "henry".into(), password: PASSWORD.into() };
        let refused = browser.sign_in(&request, &user, PASSWORD).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.text().await.unwrap().contains("Confirm your email address first"));
        sink.wait_for(1).await;
    }
}

on_both_databases! {
    async fn an_expired_link_a_disabled_user_and_a_unicode_address_are_handled(backend: Backend) {
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        let issuer = app.settings.issuer();
        register(&app, "ivan", "ivan@example.com").await;
        let verify = sink.wait_for(1).await[0].token(&issuer, "/verify-email").unwrap();

        // Past its lifetime (the server's clock moved on), a link is refused, whatever its purpose.
        assert_eq!(post_json(&app, "/users/password-reset", json!({"username": "ivan"})).await.status(), StatusCode::ACCEPTED);
        let reset = sink.wait_for(2).await[1].token(&issuer, "/password-reset").unwrap();
        app.clock.advance(std::time::Duration::from_secs(app.settings.email_verification.ttl + 1));
        let late = post_json(&app, "/users/password-reset/confirm", json!({"token": reset, "new_password": NEW_PASSWORD})).await;
        assert_error(late, 400, "invalid_token").await;
        assert_error(post_json(&app, "/users/email-verification/confirm", json!({"token": verify})).await, 400, "invalid_token").await;

        // A disabled user gets the same answer and no link: the request's work, done here to its end,
        // issues none.
        let judy = crate::helpers::TestUser { username: "judy".into(), password: PASSWORD.into() };
        let judy_id = register(&app, "judy", "judy@example.com").await["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
        sink.wait_for(3).await;
        app.disable_in_database(&judy).await;
        assert_eq!(post_json(&app, "/users/password-reset", json!({"email": "judy@example.com"})).await.status(), StatusCode::ACCEPTED);
        app.state.recovery.request_reset(portcullis::recovery::ResetFor::Email("judy@example.com")).await.unwrap();
        let judy_links = {
            use portcullis::entity::account_token::{Column, Entity};
            use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
            Entity::find().filter(Column::UserId.eq(judy_id)).filter(Column::Purpose.eq("password_reset")).count(app.state.db.writer()).await.unwrap()
        };
        assert_eq!(judy_links, 0);

        // A unicode address is an address: registered, and answered like any other.
        let created = register(&app, "kim", "kim@bücher.example").await;
        assert_eq!(created["email"], "kim@bücher.example");
    }

    async fn the_id_token_and_userinfo_say_whether_the_address_is_verified(backend: Backend) {
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        let client = crate::authorization_code::app_client(&app).await;
        register(&app, "lena", "lena@example.com").await;
        let user = crate::helpers::TestUser { username: "lena".into(), password: PASSWORD.into() };
        let request = crate::authorization_code::request(&client, &[("scope", Some("openid email"))]);
        let claims = |tokens: &Value| crate::helpers::claims_of(tokens["id_token"].as_str().unwrap());

        let answer = Browser::new(&app).sign_in(&request, &user, PASSWORD).await;
        let code = crate::authorization_code::param(&crate::authorization_code::redirected(&answer), "code").unwrap().to_owned();
        let tokens: Value = crate::authorization_code::redeem(&app, &client, &code, crate::helpers::VERIFIER).await.json().await.unwrap();
        assert_eq!(claims(&tokens)["email_verified"], false);

        let link = sink.wait_for(1).await[0].token(&app.settings.issuer(), "/verify-email").unwrap();
        assert_eq!(post_json(&app, "/users/email-verification/confirm", json!({"token": link})).await.status(), StatusCode::NO_CONTENT);
        let info: Value = app.http.get(app.url("/oauth/userinfo")).bearer_auth(tokens["access_token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
        assert_eq!(info["email_verified"], true);
        assert_eq!(info["email"], "lena@example.com");
    }
}

on_both_databases! {
    async fn a_reset_link_sets_no_password_but_its_own_users(backend: Backend) {
        // Arrange: alice's reset link, and bob.
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        register(&app, "alice", "alice@example.com").await;
        register(&app, "bob", "bob@example.com").await;
        sink.wait_for(2).await; // the verification links sent at registration
        let asked = post_json(&app, "/users/password-reset", json!({"username": "alice"})).await;
        assert_eq!(asked.status(), StatusCode::ACCEPTED);
        let token = sink.wait_for(3).await[2].token(&app.settings.issuer(), "/password-reset").expect("a reset link");
        let bob = app.state.users.find_by_username("bob").await.unwrap().unwrap();

        // Act: the store is asked to set bob's password with alice's link.
        let hash = portcullis::oauth::secret::hash(&token);
        let result = app.state.users.change_password(bob.id, "not a hash".into(), chrono::Utc::now(), Some(&hash)).await;

        // Assert: refused, bob's password unchanged, and alice's link still sets hers.
        assert!(result.is_err(), "bob's password was set with alice's link");
        assert_eq!(login(&app, "bob", PASSWORD).await.status(), StatusCode::OK);
        let done = post_json(&app, "/users/password-reset/confirm", json!({"token": token, "new_password": NEW_PASSWORD})).await;
        assert_eq!(done.status(), StatusCode::NO_CONTENT);
    }
}

on_every_backend! {
    async fn a_password_reset_by_mail_sets_the_new_password_and_ends_every_session(backend: Backend, deny: Deny) {
        // Arrange: a user with an address and a live session.
        let sink = SmtpSink::start();
        let url = sink.url();
        let app = spawn_app_with(backend, move |s| {
            with_deny(s, deny);
            s.mail.smtp_url = Some(url);
        })
        .await;
        register(&app, "alice", "alice@example.com").await;
        let session: Value = login(&app, "alice", PASSWORD).await.json().await.unwrap();
        sink.wait_for(1).await; // the verification link sent at registration

        // Act: ask for a reset, by address and for an address nobody has: the same answer.
        let known = post_json(&app, "/users/password-reset", json!({"email": "ALICE@example.com"})).await;
        let unknown = post_json(&app, "/users/password-reset", json!({"email": "nobody@example.com"})).await;

        // Assert: one message, to alice, with a link to the reset page.
        assert_eq!(known.status(), StatusCode::ACCEPTED);
        assert_eq!(unknown.status(), StatusCode::ACCEPTED);
        assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
        let mails = sink.wait_for(2).await;
        let reset = &mails[1];
        assert_eq!(reset.to, "alice@example.com");
        assert!(reset.subject.starts_with("Reset your password on "), "{}", reset.subject);
        assert!(reset.text.contains("text/html"), "an HTML alternative");
        let issuer = app.settings.issuer();
        let token = reset.token(&issuer, "/password-reset").expect("a reset link");
        assert_eq!(token.len(), 43, "256 bits");

        // Opening the link uses nothing up; a refused password leaves it working.
        let page = app.get(&format!("/password-reset?token={token}")).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let weak = post_json(&app, "/users/password-reset/confirm", json!({"token": token, "new_password": "short"})).await;
        assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let done = post_json(&app, "/users/password-reset/confirm", json!({"token": token, "new_password": NEW_PASSWORD})).await;
        assert_eq!(done.status(), StatusCode::NO_CONTENT);

        // The new password works, the old does not, the old session is over, the link is spent, and
        // the address, which the link reached, counts as verified.
        let fresh: Value = login(&app, "alice", NEW_PASSWORD).await.json().await.unwrap();
        let me: Value = app.me(fresh["access_token"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!(me["email_verified"], true);
        assert_error(login(&app, "alice", PASSWORD).await, 400, "invalid_grant").await;
        assert_eq!(app.me(session["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
        assert_error(app.refresh(session["refresh_token"].as_str().unwrap()).await, 400, "invalid_grant").await;
        let again = post_json(&app, "/users/password-reset/confirm", json!({"token": token, "new_password": "another fine passphrase"})).await;
        assert_error(again, 400, "invalid_token").await;
    }
}

on_both_databases! {
    async fn one_reset_link_sets_one_password_however_often_it_is_sent_at_once(backend: Backend) {
        // Arrange: a reset link, and two confirmations released together with different passwords.
        let sink = SmtpSink::start();
        let app = app_with_mail(backend, &sink).await;
        register(&app, "mona", "mona@example.com").await;
        assert_eq!(post_json(&app, "/users/password-reset", json!({"username": "mona"})).await.status(), StatusCode::ACCEPTED);
        let token = sink.wait_for(2).await[1].token(&app.settings.issuer(), "/password-reset").unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));

        // Act
        let attempts = ["first new passphrase", "second new passphrase"].map(|password| {
            let (barrier, app, token) = (barrier.clone(), &app, &token);
            async move {
                barrier.wait().await;
                let body = json!({"token": token, "new_password": password});
                (password, post_json(app, "/users/password-reset/confirm", body).await.status())
            }
        });
        let answers = futures_util::future::join_all(attempts).await;

        // Assert: one took, the other was refused, and the password is the one that took.
        let took: Vec<&str> = answers.iter().filter(|(_, s)| *s == StatusCode::NO_CONTENT).map(|(p, _)| *p).collect();
        assert_eq!(took.len(), 1, "{answers:?}");
        assert!(answers.iter().any(|(_, s)| *s == StatusCode::BAD_REQUEST), "{answers:?}");
        assert_eq!(login(&app, "mona", took[0]).await.status(), StatusCode::OK);
    }
}

/// How many messages the instances counted with this outcome (`portcullis_mail_messages_total`).
fn mail_count(apps: &[&TestApp], name: &'static str) -> u64 {
    apps.iter()
        .map(|app| {
            app.state
                .metrics
                .mail
                .get_or_create(&portcullis::metrics::Labels { name })
                .get()
        })
        .sum()
}
