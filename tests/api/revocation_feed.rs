//! The revocation feed (`GET /oauth/revocations`): entries after a cursor, the ETag, expiry, who may
//! read it, and a reader following the cursor missing nothing that commits concurrently.

use std::time::Duration;

use portcullis::{
    ports::Clock,
    store::revocation_feed::append,
    value::revocation::{Entry, Revocation},
};
use rand::Rng;
use reqwest::StatusCode;
use sea_orm::TransactionTrait;
use serde_json::Value;

use crate::helpers::{Backend, assert_error, claims_of, spawn_app, spawn_app_with};

on_both_databases! {
    async fn the_feed_lists_revocations_after_a_cursor_with_an_etag_and_drops_expired_ones(backend: Backend) {
        // Arrange: access tokens live 2 s, so entries expire quickly.
        let app = spawn_app_with(backend, |s| s.tokens.access_ttl = 2).await;
        let rs = app.resource_server().await;
        let feed = |since: Option<&str>, etag: Option<&str>| {
            let mut req = app.http.get(app.url("/oauth/revocations")).basic_auth(&rs.id, rs.secret.as_deref());
            if let Some(since) = since {
                req = req.query(&[("since", since)]);
            }
            if let Some(etag) = etag {
                req = req.header("if-none-match", etag);
            }
            req.send()
        };
        let user = app.seed_user().await;
        let first = app.login(&user).await;
        let second = app.login(&user).await;

        // An empty feed.
        let empty: Value = feed(None, None).await.unwrap().json().await.unwrap();
        assert_eq!(empty["entries"], serde_json::json!([]));
        let start = empty["cursor"].as_str().unwrap().to_owned();

        // Act: revoke an access token, then log a session out.
        app.revoke(&first.access_token).await;
        let resp = feed(Some(&start), None).await.unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let page: Value = resp.json().await.unwrap();
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let claims = claims_of(&first.access_token);
        assert_eq!(entries[0]["kind"], "jti");
        assert_eq!(entries[0]["value"], claims["jti"]);
        assert_eq!(entries[0]["expires_at"], claims["exp"]);
        // The same question, the same ETag; with it, 304.
        assert_eq!(feed(Some(&start), Some(&etag)).await.unwrap().status(), StatusCode::NOT_MODIFIED);

        let cursor = page["cursor"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url("/users/me/sessions")).bearer_auth(&second.access_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let next: Value = feed(Some(&cursor), None).await.unwrap().json().await.unwrap();
        let kinds: Vec<&str> = next["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"sub") && kinds.contains(&"sid"), "{kinds:?}");
        assert!(!kinds.contains(&"jti"), "nothing from before the cursor");
        let sub = next["entries"].as_array().unwrap().iter().find(|e| e["kind"] == "sub").unwrap();
        assert!(sub["not_before"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap());
        // An unknown cursor answers the full live set.
        let all: Value = feed(Some("99999999"), None).await.unwrap().json().await.unwrap();
        assert_eq!(all["entries"].as_array().unwrap().len(), kinds.len() + 1);

        // Expired entries drop out.
        app.clock.advance(Duration::from_secs(3));
        let later: Value = feed(None, None).await.unwrap().json().await.unwrap();
        assert_eq!(later["entries"], serde_json::json!([]));
        let purged = portcullis::store::housekeeping::purge(&app.state.db, app.clock.now(), app.state.settings.access_ttl()).await.unwrap();
        assert_eq!(purged.revocations as usize, kinds.len() + 1);

        // Only confidential clients, by HTTP Basic.
        assert_error(app.http.get(app.url("/oauth/revocations")).send().await.unwrap(), 401, "invalid_client").await;
    }
}

on_both_databases! {
    async fn revoking_one_token_again_and_again_records_it_once(backend: Backend) {
        // Arrange
        let app = spawn_app(backend).await;
        let rs = app.resource_server().await;
        let user = app.seed_user().await;
        let token = app.login(&user).await.access_token;
        let entries = || async {
            let page: Value = app.http.get(app.url("/oauth/revocations")).basic_auth(&rs.id, rs.secret.as_deref())
                .send().await.unwrap().json().await.unwrap();
            page["entries"].as_array().unwrap().clone()
        };

        // Act: once, then five times at once, then again.
        assert_eq!(app.revoke(&token).await.status(), StatusCode::OK);
        let again = futures_util::future::join_all((0..5).map(|_| app.revoke(&token))).await;
        assert_eq!(app.revoke(&token).await.status(), StatusCode::OK);

        // Assert: every answer as RFC 7009 says, one entry, and the token still refused.
        assert!(again.iter().all(|r| r.status() == StatusCode::OK));
        let listed = entries().await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["value"], claims_of(&token)["jti"]);
        let resp = app.http.get(app.url("/users/me")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
}

/// A reader following the feed's cursor sees every entry, however the writers' commits interleave: on
/// PostgreSQL a number handed out earlier could otherwise commit after a later one the reader saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_the_cursor_never_misses_an_entry_committed_concurrently() {
    // Arrange
    let app = spawn_app(Backend::Postgres).await;
    let writers = 8;
    let each = 25;
    let done = std::sync::Arc::new(tokio::sync::Barrier::new(writers + 1));
    for w in 0..writers {
        let (db, done) = (app.state.db.writer().clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..each {
                let txn = db.begin().await.unwrap();
                let revocation = Revocation {
                    entry: Entry::Jti(format!("w{w}-{i}")),
                    expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
                };
                append(&txn, &[revocation]).await.unwrap();
                // Other work in the same transaction, so commits interleave as in production.
                let pause = rand::thread_rng().gen_range(0..3);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                txn.commit().await.unwrap();
            }
            done.wait().await;
        });
    }

    // Act: follow the cursor while they write, and once more after.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = None;
    let mut finished = std::pin::pin!(done.wait());
    loop {
        let last = futures_util::FutureExt::now_or_never(finished.as_mut()).is_some();
        let (entries, next) = app
            .state
            .feed
            .since(cursor, chrono::Utc::now())
            .await
            .unwrap();
        cursor = Some(next);
        seen.extend(entries.into_iter().map(|r| r.entry));
        if last {
            break;
        }
    }

    // Assert
    let missed: Vec<_> = (0..writers)
        .flat_map(|w| (0..each).map(move |i| Entry::Jti(format!("w{w}-{i}"))))
        .filter(|e| !seen.contains(e))
        .collect();
    assert!(
        missed.is_empty(),
        "{} of {} entries were skipped: {missed:?}",
        missed.len(),
        writers * each
    );
}
