//! Key files that cannot sign never reach the signer: the server refuses to start with one, and a running
//! server leaves one out at a rescan while still taking the good keys beside it.

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDatabase, own_key_dir, spawn_app_with};

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
async fn serve_refuses_to_start_with_a_key_shorter_than_2048_bits_naming_the_file() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let keys = own_key_dir(chrono::Duration::hours(1));
    let weak = keys.path().join("weak.pem");
    std::fs::write(&weak, weak_key_pem()).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
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
    // A server that accepted the key would serve on: give it a bounded time to stop, never hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a 1024-bit key");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success());
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
