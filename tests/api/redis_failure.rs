//! Redis going away and coming back, with a private `redis-server` this test starts and kills: Bearer
//! routes and introspection answer `503` (never `active:true`, never a hang), grants that read no deny
//! list keep working, `/readyz` names Redis, and the server recovers without a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PrivateRedis, TestApp, free_port, spawn_app_with};

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let resp = app.http.get(app.url("/readyz")).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_token_checks_fail_closed_and_grants_go_on_then_all_recovers() {
    // Arrange
    let mut redis = PrivateRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let mut app = spawn_app_with(Backend::Sqlite, |s| s.redis.url = Some(url)).await;
    // Every call below must answer: a hang fails the test instead of stalling it.
    app.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let login = app.login(&user).await;
    assert!(app.is_active(&rs, &login.access_token).await);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["checks"]["redis"], "ok");

    // Act: Redis goes away.
    redis.stop();

    // Assert: what needs the deny list answers 503; nothing says active.
    let resp = app.introspect(&rs, &login.access_token).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_ne!(body["active"], true);
    assert_eq!(
        app.me(&login.access_token).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["redis"], "down");
    assert_eq!(ready["checks"]["database"], "ok");
    // Grants that read no deny list keep working.
    let second = app.login(&user).await;
    let rotated = app.refreshed(login.refresh_token.as_deref().unwrap()).await;

    // Act: Redis comes back (empty: it keeps nothing on disk), on the same address.
    let _redis = PrivateRedis::start(redis.port);

    // Assert: the same server recovers by itself.
    let mut recovered = false;
    for _ in 0..50 {
        let resp = app.introspect(&rs, &second.access_token).await;
        if resp.status() == StatusCode::OK {
            assert_eq!(resp.json::<Value>().await.unwrap()["active"], true);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "introspection answers again once Redis is back");
    assert_eq!(app.me(&rotated.access_token).await.status(), StatusCode::OK);
    assert_eq!(readiness(&app).await.0, StatusCode::OK);
}
