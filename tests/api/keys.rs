//! Signing keys: a rotation with the server running publishes the next key before it signs and prunes
//! only keys no live token needs; a key taken out stops verifying; instances on one folder agree after a
//! SIGHUP; and key files that cannot sign never reach the signer: the server refuses to start with one,
//! and a running server leaves one out at a rescan while still taking the good keys beside it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;

use crate::helpers::{
    Backend, TestApp, TestDatabase, assert_error, eventually, finished_within, own_key_dir,
    spawn_app_with,
};

fn weak_key_pem() -> String {
    rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024)
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    let resp = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let jwks: Value = resp.json().await.unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_the_server_running_publishes_first_signs_later_and_prunes_only_dead_keys()
{
    // Arrange: the current key is an hour old; a new one is published 2 s before it signs; tokens live 6 s.
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.publish_ahead = Some(2);
        s.keys.rescan_interval = 1;
        s.tokens.access_ttl = 6;
    })
    .await;
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let old = app.login(&user).await.access_token;
    let old_kid = kid_of(&old);
    let (ahead, ttl) = (
        app.settings.key_signs_after(),
        app.settings.key_outlives_successor(),
    );

    // Act: rotate.
    let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();
    let rotated = std::time::Instant::now();

    // Assert: the next key is published before any token carries it.
    eventually(
        Duration::from_secs(3),
        "the next key in the JWKS",
        || async { published_kids(&app).await.contains(&new_kid) },
    )
    .await;
    let meanwhile = app.login(&user).await.access_token;
    assert_eq!(
        kid_of(&meanwhile),
        old_kid,
        "the new key does not sign before its pre-publication"
    );
    // Once published long enough it signs; the old key's tokens still verify.
    eventually(Duration::from_secs(5), "the new key signing", || async {
        kid_of(&app.login(&user).await.access_token) == new_kid
    })
    .await;
    assert!(
        app.is_active(&rs, &old).await,
        "a token of the retiring key is still good"
    );
    assert!(published_kids(&app).await.contains(&old_kid));
    let states: Vec<_> = portcullis::keys::inventory(&path, ahead, ttl)
        .unwrap()
        .keys
        .into_iter()
        .map(|(k, s)| (k.kid.clone(), s))
        .collect();
    assert!(
        states.contains(&(old_kid.clone(), portcullis::keys::KeyState::Retiring)),
        "{states:?}"
    );
    assert!(
        portcullis::keys::prune(&path, ahead, ttl)
            .unwrap()
            .0
            .is_empty(),
        "prune keeps a key that can verify a live token"
    );

    // Once every token it signed has expired, prune removes it and it leaves the JWKS.
    tokio::time::sleep_until((rotated + ahead + ttl + Duration::from_secs(1)).into()).await;
    let (removed, _) = portcullis::keys::prune(&path, ahead, ttl).unwrap();
    assert_eq!(
        removed.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        [old_kid.as_str()]
    );
    eventually(
        Duration::from_secs(3),
        "the old key leaving the JWKS",
        || async { published_kids(&app).await == [new_kid.clone()] },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_out_of_the_folder_stops_verifying_its_tokens_at_the_next_rescan() {
    // Arrange: a live token, verified once (and so remembered), and a second key beside its own.
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.publish_ahead = Some(0);
        s.keys.rescan_interval = 1;
    })
    .await;
    let rs = app.resource_server().await;
    let user = app.seed_user().await;
    let token = app.login(&user).await.access_token;
    assert!(app.is_active(&rs, &token).await);
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    let (new_path, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();

    // Act: the operator withdraws the token's key, as after a leak.
    for entry in std::fs::read_dir(&path).unwrap() {
        let old = entry.unwrap().path();
        if old != new_path {
            std::fs::remove_file(old).unwrap();
        }
    }
    eventually(
        Duration::from_secs(3),
        "the old key leaving the JWKS",
        || async { published_kids(&app).await == [new_kid.clone()] },
    )
    .await;

    // Assert
    assert!(!app.is_active(&rs, &token).await);
    assert_error(app.me(&token).await, 401, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_key_folder_agree_after_a_rotation_and_sighup() {
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    // No periodic rescan during the test: only SIGHUP can make them see the new key.
    let a = spawn_app_with(Backend::Sqlite, |s| {
        s.keys.dir = path.clone();
        s.keys.rescan_interval = 3600;
    })
    .await;
    let b = a.another_instance().await;
    let etag = |app: &TestApp| {
        let req = app.http.get(app.url("/.well-known/jwks.json"));
        async move {
            req.send().await.unwrap().headers()["etag"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let before = etag(&a).await;
    assert_eq!(before, etag(&b).await);

    let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());

    eventually(
        Duration::from_secs(3),
        "both instances rescanning",
        || async {
            published_kids(&a).await.contains(&new_kid)
                && published_kids(&b).await.contains(&new_kid)
        },
    )
    .await;
    let (ea, eb) = (etag(&a).await, etag(&b).await);
    assert_eq!(ea, eb);
    assert_ne!(ea, before);
    let body = |app: &TestApp| app.http.get(app.url("/.well-known/jwks.json")).send();
    assert_eq!(
        body(&a).await.unwrap().bytes().await.unwrap(),
        body(&b).await.unwrap().bytes().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_with_a_key_shorter_than_2048_bits_naming_the_file() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let keys = own_key_dir(chrono::Duration::hours(1));
    let weak = keys.path().join("weak.pem");
    std::fs::write(&weak, weak_key_pem()).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("serve")
        .current_dir(cwd.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS__SERVER__BIND", "127.0.0.1:0")
        .env("PORTCULLIS__DATABASE__URL", &db.url)
        .env("PORTCULLIS__KEYS__DIR", keys.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that accepted the key would serve on, and be killed.
    let out = finished_within(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&weak.display().to_string()), "{stderr}");
    assert!(stderr.contains("1024 bits"), "{stderr}");
}

on_both_databases! {
    async fn a_running_server_leaves_an_unusable_key_file_out_and_still_takes_a_new_key(backend: Backend) {
        // Arrange: the signing key is an hour old; a new key signs as soon as a rescan finds it.
        let dir = own_key_dir(chrono::Duration::hours(1));
        let path = dir.path().to_owned();
        let app = spawn_app_with(backend, |s| {
            s.keys.dir = path.clone();
            s.keys.publish_ahead = Some(0);
        })
        .await;
        let user = app.seed_user().await;
        let old_kid = kid_of(&app.login(&user).await.access_token);

        // Act: files that cannot sign land in the folder (newer than the key), and the folder is rescanned.
        std::fs::write(path.join("weak.pem"), weak_key_pem()).unwrap();
        std::fs::write(path.join("garbage.pem"), "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
        app.state.keys.rescan().expect("a rescan with a bad file beside a good key succeeds");

        // Assert: tokens are still issued, signed by the good key, which alone is published.
        let token = app.login(&user).await.access_token;
        assert_eq!(kid_of(&token), old_kid);
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);
        assert_eq!(published_kids(&app).await, std::slice::from_ref(&old_kid));

        // Act: a new good key beside the bad files.
        let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();
        assert!(app.state.keys.rescan().unwrap(), "the new key changes the key set");

        // Assert: it is published and signs; the old key still verifies what it signed.
        let mut both = vec![old_kid.clone(), new_kid.clone()];
        both.sort();
        assert_eq!(published_kids(&app).await, both);
        let fresh = app.login(&user).await.access_token;
        assert_eq!(kid_of(&fresh), new_kid);
        assert_eq!(app.me(&fresh).await.status(), StatusCode::OK);
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    }
}
