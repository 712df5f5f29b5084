//! Revocation that holds: the database is the truth, so a revocation survives restarts of the server
//! and of Redis, is recorded while Redis is down, reaches every instance (and comes from the command
//! line) within `keys.rescan_interval`, and checks that depend on who the user is now read the user.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    cli::{ok, portcullis},
    helpers::{
        PrivateRedis, TestApp, TestClient, claims_of, eventually, free_port, password_form,
        spawn_app_with,
    },
};

/// Introspection's `active`, or `None` while the server answers `503` (its deny list is incomplete).
async fn active(app: &TestApp, rs: &TestClient, token: &str) -> Option<bool> {
    let resp = app.introspect(rs, token).await;
    match resp.status() {
        StatusCode::OK => resp.json::<Value>().await.unwrap()["active"].as_bool(),
        StatusCode::SERVICE_UNAVAILABLE => None,
        other => panic!("introspection answered {other}"),
    }
}

/// Revocations of each kind, made through the API: an access token (`jti`), a logged-out session (`sid`)
/// and a password change (`sub`); plus a token nobody revoked.
struct Revoked {
    tokens: Vec<String>,
    live: String,
}

async fn revoke_one_of_each(app: &TestApp) -> Revoked {
    let user = app.seed_user().await;
    let by_jti = app.login(&user).await.access_token;
    let by_sid = app.login(&user).await.access_token;
    let live = app.login(&user).await.access_token;
    let resp = app.revoke(&by_jti).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let sid = claims_of(&by_sid)["sid"].as_str().unwrap().to_owned();
    let resp = app
        .http
        .delete(app.url(&format!("/users/me/sessions/{sid}")))
        .bearer_auth(&live)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let changer = app.seed_user().await;
    let by_sub = app.login(&changer).await.access_token;
    let resp = app
        .change_password(&by_sub, &changer.password, "a brand new passphrase")
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    Revoked {
        tokens: vec![by_jti, by_sid, by_sub],
        live,
    }
}

/// Every revoked token inactive and the live one active, once the server answers at all.
async fn still_revoked(app: &TestApp, rs: &TestClient, revoked: &Revoked) {
    eventually(Duration::from_secs(10), "the deny list answers", || async {
        active(app, rs, &revoked.live).await.is_some()
    })
    .await;
    for (i, token) in revoked.tokens.iter().enumerate() {
        assert_eq!(
            active(app, rs, token).await,
            Some(false),
            "revoked token {i} is live again"
        );
    }
    assert_eq!(
        active(app, rs, &revoked.live).await,
        Some(true),
        "the unrevoked token"
    );
}

on_both_databases! {
    async fn revocations_survive_redis_restarting_empty_and_the_server_restarting(backend: Backend) {
        // Arrange
        let mut redis = PrivateRedis::start(free_port());
        let url = redis.url();
        let app = spawn_app_with(backend, |s| s.redis.url = Some(url)).await;
        let rs = app.resource_server().await;
        let revoked = revoke_one_of_each(&app).await;
        still_revoked(&app, &rs, &revoked).await;

        // Act: Redis restarts with nothing in it.
        redis.stop();
        let mut redis = PrivateRedis::start(redis.port);

        // Assert: the running server rebuilds its list rather than forget.
        still_revoked(&app, &rs, &revoked).await;

        // Act: and then the server restarts, Redis emptied once more.
        redis.stop();
        let _redis = PrivateRedis::start(redis.port);
        let restarted = app.another_instance().await;
        drop(app);

        // Assert
        still_revoked(&restarted, &rs, &revoked).await;
    }

    async fn without_redis_revocations_survive_the_server_restarting(backend: Backend) {
        // Arrange
        let app = spawn_app_with(backend, |_| {}).await;
        let rs = app.resource_server().await;
        let revoked = revoke_one_of_each(&app).await;
        still_revoked(&app, &rs, &revoked).await;

        // Act: a new process on the same database; its in-process list starts empty.
        let restarted = app.another_instance().await;
        drop(app);

        // Assert
        still_revoked(&restarted, &rs, &revoked).await;
    }

    async fn while_redis_is_down_revocation_and_reuse_are_recorded_and_enforced_once_it_returns(backend: Backend) {
        // Arrange: a token to revoke, and a family whose first refresh token is spent.
        let mut redis = PrivateRedis::start(free_port());
        let url = redis.url();
        let app = spawn_app_with(backend, |s| s.redis.url = Some(url)).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let doomed = app.login(&user).await.access_token;
        let live = app.login(&user).await.access_token;
        let family = app.login(&user).await;
        let first_rt = family.refresh_token.clone().unwrap();
        let rotated = app.refreshed(&first_rt).await;

        // Act: Redis goes away; a revocation and a reuse happen meanwhile.
        redis.stop();
        let resp = app.revoke(&doomed).await;
        assert_eq!(resp.status(), StatusCode::OK, "the revocation is recorded and answered as usual");
        crate::helpers::assert_error(app.refresh(&first_rt).await, 400, "invalid_grant").await;
        assert_eq!(app.me(&live).await.status(), StatusCode::SERVICE_UNAVAILABLE, "Bearer routes fail closed");
        // Redis comes back empty.
        let _redis = PrivateRedis::start(redis.port);

        // Assert: both are enforced; the rest lives.
        let revoked = Revoked {
            tokens: vec![doomed, family.access_token, rotated.access_token],
            live,
        };
        still_revoked(&app, &rs, &revoked).await;
        let next = rotated.refresh_token.unwrap();
        crate::helpers::assert_error(app.refresh(&next).await, 400, "invalid_grant").await;
    }

    async fn without_redis_every_instance_learns_of_revocations_made_elsewhere_within_the_rescan_interval(backend: Backend) {
        // Arrange: two instances on one database, each with its own in-process list.
        let a = spawn_app_with(backend, |s| s.keys.rescan_interval = 1).await;
        let b = a.another_instance().await;
        let rs = a.resource_server().await;
        let user = a.seed_user().await;
        let token = a.login(&user).await.access_token;
        assert_eq!(active(&b, &rs, &token).await, Some(true));

        // Act: revoked at A.
        let resp = a.revoke(&token).await;
        assert_eq!(resp.status(), StatusCode::OK);

        // Assert: at once at A, and at B within the interval (and a margin for the poll itself).
        assert_eq!(active(&a, &rs, &token).await, Some(false));
        eventually(Duration::from_secs(3), "instance B denies the token", || async {
            active(&b, &rs, &token).await == Some(false)
        })
        .await;
    }

    async fn a_user_disabled_on_the_command_line_is_refused_at_once_by_every_instance(backend: Backend) {
        // Arrange: an admin and a user, both logged in at instance A; no Redis.
        let a = spawn_app_with(backend, |s| s.keys.rescan_interval = 1).await;
        let b = a.another_instance().await;
        let rs = a.resource_server().await;
        let admin = a.seed_admin().await;
        let admin_token = a.login(&admin).await.access_token;
        let user = a.seed_user().await;
        let user_token = a.login(&user).await.access_token;
        let admin_id = claims_of(&admin_token)["sub"].as_str().unwrap().to_owned();
        for app in [&a, &b] {
            let resp = app.http.get(app.url("/admin/users")).bearer_auth(&admin_token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }

        // Act: the operator disables both from the command line.
        let db = &a.settings.database.url;
        ok(&portcullis(db, &["users", "disable", &admin.username], None));
        ok(&portcullis(db, &["users", "disable", &user.username], None));

        // Assert: the admin's token opens no admin route, nor can it enable its owner again; the user's
        // token is inactive at introspection; both at once, on both instances.
        for app in [&a, &b] {
            let resp = app.http.get(app.url("/admin/users")).bearer_auth(&admin_token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            let resp = app.http.post(app.url(&format!("/admin/users/{admin_id}/enable"))).bearer_auth(&admin_token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(active(app, &rs, &user_token).await, Some(false));
            assert_eq!(active(app, &rs, &admin_token).await, Some(false));
        }
        assert!(!a.state.users.find_by_username(&admin.username).await.unwrap().unwrap().is_active);
        // Neither can log in or refresh.
        for who in [&admin, &user] {
            let resp = b.token(&password_form(&who.username, &who.password)).await;
            crate::helpers::assert_error(resp, 400, "invalid_grant").await;
        }
    }

    async fn a_login_racing_a_password_change_never_outlives_it(backend: Backend) {
        // Arrange: each round, logins with the old password race the change of it.
        let app = spawn_app_with(backend, |_| {}).await;
        let rs = app.resource_server().await;
        let mut raced = 0;
        for round in 0..12 {
            let user = app.seed_user().await;
            let first = app.login(&user).await.access_token;
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(7));
            let logins: Vec<_> = (0..6)
                .map(|_| {
                    let (http, url, user, barrier) = (app.http.clone(), app.url("/oauth/token"), user.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let resp = http
                            .post(url)
                            .form(&password_form(&user.username, &user.password))
                            .send()
                            .await
                            .unwrap();
                        if resp.status() == StatusCode::OK { Some(resp.json::<Value>().await.unwrap()) } else { None }
                    })
                })
                .collect();
            barrier.wait().await;
            let resp = app.change_password(&first, &user.password, "a brand new passphrase").await;
            assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{}", resp.text().await.unwrap());

            // Assert: whatever each login got, none of it works after the change.
            for login in logins {
                let Some(body) = login.await.unwrap() else { continue };
                raced += 1;
                let access = body["access_token"].as_str().unwrap();
                assert_eq!(active(&app, &rs, access).await, Some(false), "round {round}: a login's access token outlived the change");
                let refresh = app.refresh(body["refresh_token"].as_str().unwrap()).await;
                assert_eq!(refresh.status(), StatusCode::BAD_REQUEST, "round {round}: a login's refresh token outlived the change");
            }
        }
        assert!(raced > 0, "some logins completed with the old password");
    }
}

on_both_databases! {
    async fn while_redis_is_down_logouts_password_changes_and_disables_are_answered_as_usual(backend: Backend) {
        // Arrange: an admin, a user with two sessions, and a token revoked before the outage.
        let mut redis = PrivateRedis::start(free_port());
        let url = redis.url();
        let app = spawn_app_with(backend, |s| s.redis.url = Some(url)).await;
        let rs = app.resource_server().await;
        let admin = app.seed_admin().await;
        let admin_token = app.login(&admin).await.access_token;
        let user = app.seed_user().await;
        let first = app.login(&user).await.access_token;
        let second = app.login(&user).await.access_token;
        let revoked = app.login(&user).await.access_token;
        let resp = app.revoke(&revoked).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let victim = app.seed_user().await;
        let victim_token = app.login(&victim).await.access_token;
        let victim_id = claims_of(&victim_token)["sub"].as_str().unwrap().to_owned();

        // Act: Redis goes away.
        redis.stop();

        // Assert: what only takes access away is checked against the database and answered; a revoked
        // token is still refused; every other Bearer route fails closed.
        assert_eq!(app.me(&first).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        let sid = claims_of(&second)["sid"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url(&format!("/users/me/sessions/{sid}"))).bearer_auth(&revoked).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a revoked token logs nothing out");
        let resp = app.http.delete(app.url(&format!("/users/me/sessions/{sid}"))).bearer_auth(&first).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let resp = app.change_password(&first, &user.password, "a brand new passphrase").await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let resp = app.http.post(app.url(&format!("/admin/users/{victim_id}/disable"))).bearer_auth(&admin_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let resp = app.http.post(app.url(&format!("/admin/users/{victim_id}/enable"))).bearer_auth(&admin_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "what gives access back is not");

        // And once Redis is back (empty), all of it holds.
        let _redis = PrivateRedis::start(redis.port);
        let revoked_all = Revoked {
            tokens: vec![first, second, revoked],
            live: admin_token,
        };
        still_revoked(&app, &rs, &revoked_all).await;
        assert_eq!(active(&app, &rs, &victim_token).await, Some(false));
    }
}

on_both_databases! {
    async fn a_client_deleted_on_the_command_line_takes_its_tokens_with_it(backend: Backend) {
        // Arrange: a service's own token, and a user's token issued through a client of its own; no Redis.
        let app = spawn_app_with(backend, |s| s.keys.rescan_interval = 1).await;
        let rs = app.resource_server().await;
        let service = app.seed_client(false, &[portcullis::value::grant_type::GrantType::ClientCredentials], "").await;
        let resp = app.token_basic(&service.id, service.secret.as_deref().unwrap(), &[("grant_type", "client_credentials")]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let service_token = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let app_client = app.seed_client(true, &[portcullis::value::grant_type::GrantType::Password], "profile").await;
        let user = app.seed_user().await;
        let resp = app.token(&[("grant_type", "password"), ("client_id", &app_client.id), ("username", &user.username), ("password", &user.password)]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let user_token = resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let other = app.login(&user).await.access_token;

        // Act
        let db = &app.settings.database.url;
        ok(&portcullis(db, &["clients", "delete", &service.id], None));
        ok(&portcullis(db, &["clients", "delete", &app_client.id], None));

        // Assert: within the rescan interval both are inactive; a token of another client is not.
        eventually(Duration::from_secs(3), "the deleted clients' tokens are denied", || async {
            active(&app, &rs, &service_token).await == Some(false) && active(&app, &rs, &user_token).await == Some(false)
        })
        .await;
        assert_eq!(active(&app, &rs, &other).await, Some(true));
    }
}

/// The deny list's `deny:loaded` mark under `prefix`, as Redis holds it now.
async fn loaded_mark(redis: &redis::aio::MultiplexedConnection, prefix: &str) -> Option<i64> {
    redis::cmd("GET")
        .arg(format!("{prefix}deny:loaded"))
        .query_async::<Option<i64>>(&mut redis.clone())
        .await
        .unwrap()
}

/// A Redis that fails over to a replica behind the log (it has the mark, an older one, but lacks the
/// newest entries) is found out and rebuilt, rather than taken for complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_behind_what_was_copied_into_it_is_rebuilt_not_believed() {
    // Arrange: a revoked token, copied into Redis by the server's sync (the mark reaches its number).
    let app = spawn_app_with(crate::helpers::Backend::Sqlite, |s| {
        crate::helpers::with_deny(s, crate::helpers::Deny::Redis);
        s.keys.rescan_interval = 1;
    })
    .await;
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let token = app.login(&user).await.access_token;
    let resp = app.revoke(&token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let prefix = app.settings.redis.key_prefix.clone();
    let mut redis = redis::Client::open(crate::helpers::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mark = || loaded_mark(&redis, &prefix);
    eventually(
        Duration::from_secs(5),
        "the sync records the revocation as copied",
        || async { mark().await.is_some_and(|m| m >= 1) },
    )
    .await;

    // Act: the replica that takes over lacks the entry and has an older mark.
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    redis::cmd("DEL")
        .arg(format!("{prefix}deny:jti:{jti}"))
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{prefix}deny:loaded"))
        .arg(0)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();

    // Assert: never active; denied again once rebuilt.
    eventually(
        Duration::from_secs(10),
        "the token is denied again",
        || async {
            match active(&app, &rs, &token).await {
                Some(true) => panic!("a revoked token was called active on a Redis behind the log"),
                Some(false) => true,
                None => false,
            }
        },
    )
    .await;
}

/// Redis emptied while a copy is under way (after the log was read, before the copy is marked) is not
/// vouched for: neither a catch-up nor a rebuild marks an emptied Redis complete, so every instance goes on
/// finding it incomplete and rebuilds it, instead of calling its revoked tokens live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_overtaken_by_a_flush_does_not_mark_redis_complete() {
    use portcullis::{ports::DenyList as _, store::deny_list::DenyList};
    // Arrange: a list of its own prefix, as an instance has.
    let prefix = format!("test-{}:", uuid::Uuid::new_v4());
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let list = DenyList::redis(
        redis::aio::ConnectionManager::new(client.clone())
            .await
            .unwrap(),
        &prefix,
    );
    let redis = client.get_multiplexed_async_connection().await.unwrap();
    let mark = || loaded_mark(&redis, &prefix);
    // What FLUSHALL does to this installation's keys, leaving other tests' alone.
    let flush = || {
        let (mut redis, pattern) = (redis.clone(), format!("{prefix}*"));
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<()>(&mut redis)
                    .await
                    .unwrap();
            }
        }
    };
    let started = list.begin_rebuild().await.unwrap();
    list.mark_copied(3, Some(started)).await.unwrap();
    list.mark_copied(5, None).await.unwrap();
    assert_eq!(mark().await, Some(5));

    // Act and assert: emptied during a catch-up, then during a rebuild.
    flush().await;
    assert!(list.mark_copied(7, None).await.is_err());
    assert_eq!(mark().await, None, "a catch-up marked an emptied Redis");
    assert!(list.incomplete().await.unwrap());
    let started = list.begin_rebuild().await.unwrap();
    flush().await;
    assert!(list.mark_copied(7, Some(started)).await.is_err());
    assert_eq!(
        mark().await,
        None,
        "a rebuild marked a Redis emptied under it"
    );

    // A rebuild nothing disturbs marks it complete again.
    let started = list.begin_rebuild().await.unwrap();
    list.mark_copied(7, Some(started)).await.unwrap();
    assert_eq!(mark().await, Some(7));
    assert!(!list.incomplete().await.unwrap());
    flush().await;
}
