//! Housekeeping: a pass deletes ended sessions, spent refresh tokens past their idle lifetime and
//! revocations whose tokens have expired, and nothing that could still matter. Time is the pass's
//! `now`, given by the test.

use std::time::Duration;

use chrono::Utc;
use portcullis::{
    entity::refresh_token,
    oauth::secret,
    store::housekeeping::{BATCH, Purged, purge},
};
use reqwest::StatusCode;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use crate::{
    cli::{ok, portcullis},
    helpers::{Backend, TestApp, assert_error, claims_of, spawn_app_with},
};

/// A session's refresh tokens, oldest first: the first from the login, then one per refresh.
async fn chain(app: &TestApp, refreshes: usize) -> Vec<String> {
    let user = app.seed_user().await;
    let mut tokens = vec![app.login(&user).await.refresh_token.unwrap()];
    for _ in 0..refreshes {
        let next = app
            .refreshed(tokens.last().unwrap())
            .await
            .refresh_token
            .unwrap();
        tokens.push(next);
    }
    tokens
}

/// Moves a refresh token's idle expiry, as if it had been issued under another `refresh.idle_ttl`.
async fn expire_at(app: &TestApp, token: &str, at: chrono::DateTime<Utc>) {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::ExpiresAt, Expr::value(at))
        .filter(refresh_token::Column::TokenHash.eq(secret::hash(token)))
        .exec(app.state.db.writer())
        .await
        .unwrap();
}

async fn exists(app: &TestApp, token: &str) -> bool {
    refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(secret::hash(token)))
        .one(app.state.db.writer())
        .await
        .unwrap()
        .is_some()
}

on_both_databases! {
    async fn a_pass_deletes_ended_sessions_and_expired_revocations_once_their_tokens_are_dead(backend: Backend) {
        // Arrange: access tokens live a minute; one session logged out, one live.
        let app = spawn_app_with(backend, |s| s.tokens.access_ttl = 60).await;
        let user = app.seed_user().await;
        let ended = app.login(&user).await;
        let live = app.login(&user).await;
        let sid = claims_of(&ended.access_token)["sid"].as_str().unwrap().to_owned();
        let resp = app.http.delete(app.url(&format!("/users/me/sessions/{sid}"))).bearer_auth(&live.access_token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let now = Utc::now();

        // Act + Assert: while the ended session's access token may live, nothing goes.
        assert_eq!(purge(&app.state.db, now, app.state.settings.access_ttl()).await.unwrap(), Purged::default());
        assert!(exists(&app, ended.refresh_token.as_deref().unwrap()).await);

        // A minute later its access token is dead: the session, its token and its revocation go.
        let later = now + chrono::Duration::seconds(61);
        let purged = purge(&app.state.db, later, app.state.settings.access_ttl()).await.unwrap();
        assert_eq!(purged, Purged { sessions: 1, refresh_tokens: 1, revocations: 1, ..Purged::default() });
        assert!(!exists(&app, ended.refresh_token.as_deref().unwrap()).await);
        assert!(exists(&app, live.refresh_token.as_deref().unwrap()).await);
        // Twice is harmless.
        assert_eq!(purge(&app.state.db, later, app.state.settings.access_ttl()).await.unwrap(), Purged::default());
        // The live session still refreshes; the ended one's token is refused.
        app.refreshed(live.refresh_token.as_deref().unwrap()).await;
        assert_error(app.refresh(ended.refresh_token.as_deref().unwrap()).await, 400, "invalid_grant").await;

        // Past every idle lifetime, the idle session goes too.
        let idle = now + chrono::Duration::days(8);
        let purged = purge(&app.state.db, idle, app.state.settings.access_ttl()).await.unwrap();
        assert_eq!(purged.sessions, 1);
        assert_eq!(app.count("sessions").await, 0);
        assert_eq!(app.count("refresh_tokens").await, 0);
    }

    async fn spent_tokens_go_once_expired_but_never_while_an_earlier_one_could_be_replayed(backend: Backend) {
        // Arrange: a session refreshed twice (t0 → t1 → t2, t2 live), and another likewise (u0 → u1 → u2)
        // whose first token was issued under a longer idle lifetime than its second.
        let app = spawn_app_with(backend, |_| {}).await;
        let t = chain(&app, 2).await;
        let u = chain(&app, 2).await;
        let past = Utc::now() - chrono::Duration::seconds(1);
        expire_at(&app, &t[0], past).await;
        expire_at(&app, &t[1], past).await;
        expire_at(&app, &u[1], past).await;

        // Act
        let purged = purge(&app.state.db, Utc::now(), app.state.settings.access_ttl()).await.unwrap();

        // Assert: t0 and t1 are gone; u1 stays, since it is what marks u0 spent.
        assert_eq!(purged, Purged { refresh_tokens: 2, ..Purged::default() });
        assert!(!exists(&app, &t[0]).await && !exists(&app, &t[1]).await);
        assert!(exists(&app, &u[1]).await);
        app.refreshed(&t[2]).await;
        // u0 replayed is still reuse: refused, and its session revoked with it.
        assert_error(app.refresh(&u[0]).await, 400, "invalid_grant").await;
        assert_error(app.refresh(&u[2]).await, 400, "invalid_grant").await;
    }

    async fn a_pass_goes_on_past_batches_of_spent_tokens_that_expired_at_one_instant(backend: Backend) {
        // Arrange: a live token after more spent tokens than two batches hold, all expired at one
        // instant, as the tokens capped by their session's absolute lifetime are.
        let app = spawn_app_with(backend, |_| {}).await;
        let user = app.seed_user().await;
        let live = app.login(&user).await.refresh_token.unwrap();
        let first = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(secret::hash(&live)))
            .one(app.state.db.writer())
            .await
            .unwrap()
            .unwrap();
        let expired = Utc::now() - chrono::Duration::seconds(1);
        let spent = 2 * BATCH + 1;
        let earlier: Vec<_> = (0..spent)
            .map(|i| refresh_token::ActiveModel {
                id: Set(uuid::Uuid::new_v4()),
                session_id: Set(first.session_id),
                token_hash: Set(secret::hash(&format!("spent-{i}"))),
                scope: Set(first.scope.clone()),
                created_at: Set(first.created_at - chrono::Duration::seconds((spent - i) as i64)),
                expires_at: Set(expired),
            })
            .collect();
        for rows in earlier.chunks(500) {
            let insert = refresh_token::Entity::insert_many(rows.to_vec());
            insert.exec_without_returning(app.state.db.writer()).await.unwrap();
        }

        // Act
        let purged = purge(&app.state.db, Utc::now(), app.state.settings.access_ttl()).await.unwrap();

        // Assert: every spent token went; the live one stays, and refreshes.
        assert_eq!(purged, Purged { refresh_tokens: spent, ..Purged::default() });
        assert_eq!(app.count("refresh_tokens").await, 1);
        app.refreshed(&live).await;
    }

    async fn portcullis_purge_prints_one_line_per_table(backend: Backend) {
        let app = spawn_app_with(backend, |_| {}).await;
        let out = ok(&portcullis(&app.settings.database.url, &["purge"], None));
        assert_eq!(out, "sessions: 0\nrefresh_tokens: 0\nrevocations: 0\nauthorization_codes: 0\nsign_in_sessions: 0\naccount_tokens: 0\naccount_mail: 0\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pass_counts_what_it_removed() {
    // Arrange: passes every second; access tokens live a second.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.maintenance.purge_interval = 1;
        s.tokens.access_ttl = 1;
    })
    .await;
    let user = app.seed_user().await;
    let login = app.login(&user).await;
    let resp = app
        .http
        .delete(app.url("/users/me/sessions"))
        .bearer_auth(&login.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // Act + Assert: within a few passes the session is gone and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get_text("/metrics").await;
        if metrics.contains("portcullis_purged_rows_total{table=\"sessions\"} 1") {
            assert!(
                metrics.contains("portcullis_purged_rows_total{table=\"refresh_tokens\"} 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pass removed the session: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("sessions").await, 0);
}
