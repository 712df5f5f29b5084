//! Login protection: rate limits per address and per username, the trusted-proxy rule, failure
//! throttling shared through Redis, the password change counted as a login, and the bounded hashing
//! queue.

use std::{num::NonZeroU32, time::Duration};

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::{
    Backend, Deny, TestApp, TestUser, assert_error, password_form, spawn_app_with, with_deny,
};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// A password grant as if from `from` (the test server trusts 127.0.0.1 as a proxy where it must).
async fn login_from(app: &TestApp, from: &str, username: &str, password: &str) -> Response {
    app.http
        .post(app.url("/oauth/token"))
        .header("x-forwarded-for", from)
        .form(&password_form(username, password))
        .send()
        .await
        .unwrap()
}

/// `user`'s own login, as if from `from`.
async fn login_as(app: &TestApp, from: &str, user: &TestUser) -> Response {
    login_from(app, from, &user.username, &user.password).await
}

/// `user`'s login from `from` is let through.
async fn assert_logs_in(app: &TestApp, from: &str, user: &TestUser) {
    let resp = login_as(app, from, user).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "from {from}: {}",
        resp.text().await.unwrap()
    );
}

async fn assert_rate_limited(resp: Response, at_most: u64) -> u64 {
    let retry_after: u64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=at_most).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_error(resp, 429, "rate_limited").await;
    retry_after
}

fn behind_a_proxy(s: &mut portcullis::config::Settings) {
    s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_login_over_the_per_address_limit_is_429_and_other_addresses_are_not() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        behind_a_proxy(s);
        s.rate_limit.login_per_ip = n(3);
    })
    .await;
    let user = app.seed_user().await;
    for _ in 0..3 {
        assert_logs_in(&app, "198.51.100.1", &user).await;
    }

    // Three a minute: a cell every twenty seconds.
    assert_rate_limited(login_as(&app, "198.51.100.1", &user).await, 20).await;
    assert_logs_in(&app, "198.51.100.2", &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_username_limit_holds_across_addresses() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        behind_a_proxy(s);
        s.rate_limit.login_per_user = n(2);
    })
    .await;
    let user = app.seed_user().await;
    let other = app.seed_user().await;
    assert_logs_in(&app, "198.51.100.1", &user).await;
    let shouted = TestUser {
        username: user.username.to_uppercase(),
        ..user.clone()
    };
    assert_logs_in(&app, "198.51.100.2", &shouted).await;

    assert_rate_limited(login_as(&app, "198.51.100.3", &user).await, 30).await;
    assert_logs_in(&app, "198.51.100.3", &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // Not trusted: every request is from 127.0.0.1, whatever the header says.
    let app = spawn_app_with(Backend::Sqlite, |s| s.rate_limit.login_per_ip = n(2)).await;
    let user = app.seed_user().await;
    for from in ["198.51.100.1", "198.51.100.2"] {
        assert_logs_in(&app, from, &user).await;
    }
    assert_rate_limited(login_as(&app, "198.51.100.3", &user).await, 30).await;

    // Trusted: the rightmost address that is not a trusted proxy is the client.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.login_per_ip = n(1);
        s.server.trusted_proxies = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    let user = app.seed_user().await;
    assert_logs_in(&app, "203.0.113.9, 198.51.100.1, 10.1.2.3", &user).await;
    // A spoofed leftmost entry does not make a new client.
    assert_rate_limited(
        login_as(&app, "203.0.113.77, 198.51.100.1", &user).await,
        60,
    )
    .await;
    assert_logs_in(&app, "198.51.100.2", &user).await;
}

/// A server behind a proxy at 127.0.0.1 that allows `per_address` logins a minute from one client.
async fn limited_behind_a_proxy(per_address: u32) -> (TestApp, TestUser) {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        behind_a_proxy(s);
        s.rate_limit.login_per_ip = n(per_address);
    })
    .await;
    let user = app.seed_user().await;
    (app, user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_with_a_port_in_x_forwarded_for_is_that_address() {
    let (app, user) = limited_behind_a_proxy(2).await;

    // Each request names a new spoofed client on the left, and the proxy's entry on the right carries a
    // new source port: the client is the proxy's entry, every time.
    for i in 1..=2 {
        let from = format!("203.0.113.{i}, 198.51.100.1:{}", 40000 + i);
        assert_logs_in(&app, &from, &user).await;
    }
    for from in ["203.0.113.3, 198.51.100.1:40003", "198.51.100.1"] {
        assert_rate_limited(login_as(&app, from, &user).await, 30).await;
    }

    // The same for IPv6 in brackets, with and without a port.
    for from in [
        "203.0.113.4, [2001:db8::1]:443",
        "203.0.113.5, [2001:db8::1]",
    ] {
        assert_logs_in(&app, from, &user).await;
    }
    assert_rate_limited(
        login_as(&app, "203.0.113.6, [2001:db8::1]:8443", &user).await,
        30,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_in_x_forwarded_for_stops_the_walk_at_the_proxy() {
    let (app, user) = limited_behind_a_proxy(2).await;

    // The proxy could not name its client: whatever lies left of `unknown` is not believed, and the
    // client is the proxy itself (the peer).
    for i in 1..=2 {
        assert_logs_in(&app, &format!("203.0.113.{i}, unknown"), &user).await;
    }
    assert_rate_limited(
        login_as(&app, "203.0.113.3, not-an-address", &user).await,
        30,
    )
    .await;
    let from_the_proxy_itself = app
        .token(&password_form(&user.username, &user.password))
        .await;
    assert_rate_limited(from_the_proxy_itself, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_counted_by_their_64() {
    let (app, user) = limited_behind_a_proxy(2).await;

    for from in ["2001:db8:1:2::1", "[2001:db8:1:2:ffff:ffff:ffff:fffe]:443"] {
        assert_logs_in(&app, from, &user).await;
    }
    assert_rate_limited(
        login_as(&app, "2001:db8:1:2:1234:5678:9abc:def0", &user).await,
        30,
    )
    .await;
    // The next /64 is another client.
    assert_logs_in(&app, "2001:db8:1:3::1", &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_failures_are_throttled_by_their_64() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        behind_a_proxy(s);
        s.throttle.failures = 2;
        s.throttle.base_delay = 60;
    })
    .await;
    let user = app.seed_user().await;
    for from in ["2001:db8:5:6::1", "2001:db8:5:6::2"] {
        assert_error(
            login_from(&app, from, &user.username, "wrong password here").await,
            400,
            "invalid_grant",
        )
        .await;
    }

    assert_rate_limited(login_as(&app, "2001:db8:5:6:a:b:c:d", &user).await, 60).await;
    assert_logs_in(&app, "2001:db8:5:7::1", &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.rate_limit.register_per_ip = n(2)).await;
    app.seed_user().await;
    app.seed_user().await;
    assert_rate_limited(
        app.register("one-too-many", "correct horse battery staple")
            .await,
        30,
    )
    .await;
    assert_eq!(app.count("users").await, 2);
}

on_every_backend! {
    async fn throttling_grows_per_failure_stops_at_the_maximum_and_resets_on_success(backend: Backend, deny: Deny) {
        // Arrange: delays from the first failure, 1 s doubling to at most 2 s.
        let app = spawn_app_with(backend, |s| {
            with_deny(s, deny);
            behind_a_proxy(s);
            s.throttle.failures = 1;
            s.throttle.base_delay = 1;
            s.throttle.max_delay = 2;
        }).await;
        let user = app.seed_user().await;
        let here = "198.51.100.7";
        let wrong = || login_from(&app, here, &user.username, "not the password at all");

        // Act + Assert
        assert_error(wrong().await, 400, "invalid_grant").await;
        assert_eq!(assert_rate_limited(wrong().await, 1).await, 1);
        // While delayed even the right password is refused unchecked.
        assert_rate_limited(login_as(&app, here, &user).await, 1).await;
        app.clock.advance(Duration::from_secs(1));
        assert_error(wrong().await, 400, "invalid_grant").await;
        assert_eq!(assert_rate_limited(wrong().await, 2).await, 2, "doubled");
        app.clock.advance(Duration::from_secs(2));
        assert_error(wrong().await, 400, "invalid_grant").await;
        assert_eq!(assert_rate_limited(wrong().await, 2).await, 2, "capped at max_delay");
        // Another address is not slowed for this user (the ceiling is far).
        assert_logs_in(&app, "198.51.100.8", &user).await;

        // A success from the delayed address, once its delay is paid, resets it.
        app.clock.advance(Duration::from_secs(2));
        assert_logs_in(&app, here, &user).await;
        assert_error(wrong().await, 400, "invalid_grant").await;
    }

    async fn attempts_sent_at_once_get_one_password_check_past_the_threshold(backend: Backend, deny: Deny) {
        // Arrange: delays from the second failure; one failure already counted.
        let app = spawn_app_with(backend, |s| {
            with_deny(s, deny);
            behind_a_proxy(s);
            s.throttle.failures = 2;
            s.throttle.base_delay = 60;
        }).await;
        let user = app.seed_user().await;
        let here = "198.51.100.7";
        assert_error(login_from(&app, here, &user.username, "not the password at all").await, 400, "invalid_grant").await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));

        // Act: eight wrong passwords released at once.
        let attempts = (0..8).map(|i| {
            let (app, user, barrier) = (&app, &user, barrier.clone());
            async move {
                barrier.wait().await;
                login_from(app, here, &user.username, &format!("wrong guess number {i}")).await.status()
            }
        });
        let statuses = futures_util::future::join_all(attempts).await;

        // Assert: the one that reached the threshold was checked; the rest waited unchecked.
        let checked = statuses.iter().filter(|s| **s == StatusCode::BAD_REQUEST).count();
        let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!((checked, refused), (1, 7), "{statuses:?}");
    }

    async fn the_per_username_ceiling_delays_every_address_and_unknown_names_count_alike(backend: Backend, deny: Deny) {
        let app = spawn_app_with(backend, |s| {
            with_deny(s, deny);
            behind_a_proxy(s);
            s.throttle.failures = 100;
            s.throttle.user_ceiling = 2;
            s.throttle.base_delay = 60;
        }).await;
        let user = app.seed_user().await;
        for name in [&user.username, &"nobody-here".to_owned()] {
            for from in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
                assert_error(login_from(&app, from, name, "wrong password here").await, 400, "invalid_grant").await;
            }
            // Three failures, over the ceiling of two: a fresh address waits too.
            assert_rate_limited(login_from(&app, "198.51.100.99", name, "wrong password here").await, 60).await;
        }
    }
}

on_both_databases! {
    async fn two_instances_share_the_failure_counters_and_a_restart_keeps_them(backend: Backend) {
        let a = spawn_app_with(backend, |s| {
            with_deny(s, Deny::Redis);
            behind_a_proxy(s);
            s.throttle.failures = 1;
            s.throttle.base_delay = 60;
        }).await;
        let b = a.another_instance().await;
        let user = a.seed_user().await;

        assert_error(login_from(&a, "198.51.100.5", &user.username, "wrong password here").await, 400, "invalid_grant").await;

        assert_rate_limited(login_as(&b, "198.51.100.5", &user).await, 60).await;
        drop(b);
        let restarted = a.another_instance().await;
        drop(a);
        assert_rate_limited(login_as(&restarted, "198.51.100.5", &user).await, 60).await;
    }

    async fn a_wrong_current_password_is_a_failed_login(backend: Backend) {
        // Arrange: two failures from one address for one user start the delays.
        let app = spawn_app_with(backend, |s| {
            s.throttle.failures = 2;
            s.throttle.base_delay = 60;
        })
        .await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        let change = |current: &'static str| app.change_password(&token, current, "a brand new passphrase");

        // Act
        for _ in 0..2 {
            assert_eq!(change("not the password").await.status(), StatusCode::BAD_REQUEST);
        }
        let throttled = app.change_password(&token, &user.password, "a brand new passphrase").await;

        // Assert: refused without checking, even the right password; and the token endpoint alike.
        assert_rate_limited(throttled, 60).await;
        assert_rate_limited(app.token(&password_form(&user.username, &user.password)).await, 60).await;
        // Nothing changed.
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    }

    async fn the_password_change_counts_against_the_per_user_login_rate_limit(backend: Backend) {
        let app = spawn_app_with(backend, |s| s.rate_limit.login_per_user = n(2)).await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        let change = || app.change_password(&token, "not the password", "a brand new passphrase");
        assert_eq!(change().await.status(), StatusCode::BAD_REQUEST);
        assert_rate_limited(change().await, 30).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_hashing_queue_answers_503_while_the_rest_of_the_server_answers() {
    // Arrange: one hashing slot, and almost no patience for it.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.password.hash_concurrency = 1;
        s.password.hash_queue_wait_ms = 1;
    })
    .await;

    // Act: a flood of logins, and beside it the JWKS.
    let form = password_form("nobody-at-all", "whatever it is");
    let flood = futures_util::future::join_all((0..40).map(|_| app.token(&form)));
    let beside = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        app.get("/.well-known/jwks.json").await
    };
    let (answers, jwks) = tokio::join!(flood, beside);

    // Assert
    assert_eq!(jwks.status(), StatusCode::OK);
    let mut unavailable = 0;
    for resp in answers {
        match resp.status().as_u16() {
            400 => {}
            503 => {
                unavailable += 1;
                assert!(resp.headers().contains_key("retry-after"));
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "temporarily_unavailable");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(unavailable > 0, "the queue was saturated");
}
