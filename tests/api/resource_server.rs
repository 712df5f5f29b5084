//! The example resource server (`examples/resource_server.rs`), run as a real process that knows only the
//! issuer URL: it accepts good tokens, refuses bad and revoked ones, does not let forged `kid`s make it
//! hammer the issuer, and survives a key rotation without a restart.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    Backend, TestClient, claims_of, eventually, listen_at_issuer, own_key_dir, read_within,
    spawn_app_with, test_signing_pem,
};

struct Example {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Example {
    fn start(issuer: &str, client: &TestClient) -> Self {
        let binary = example_binary();
        let mut child = Command::new(binary)
            .env("ISSUER", issuer)
            .env("CLIENT_ID", &client.id)
            .env("CLIENT_SECRET", client.secret.as_deref().unwrap())
            .env("BIND", "127.0.0.1:0")
            .env("FEED_INTERVAL_MS", "200")
            .env("MIN_REFETCH_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = read_within(&mut child, Duration::from_secs(30), move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        });
        let port = line.trim().rsplit(':').next().unwrap().to_owned();
        assert!(line.starts_with("listening on"), "{line}");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, token: &str) -> StatusCode {
        self.http
            .get(format!("{}/protected", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn jwks_fetches(&self) -> u64 {
        let stats: Value = self
            .http
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["jwks_fetches"].as_u64().unwrap()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/examples/resource_server`, built if this test run did not build it.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join("resource_server");
    if !binary.exists() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "--example", "resource_server"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    binary
}

fn sign(claims: &Value, kid: &str, pem: &[u8]) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

async fn within(secs: u64, example: &Example, token: &str, want: StatusCode) {
    eventually(
        Duration::from_secs(secs),
        &format!("the example answering {want}"),
        || async { example.call(token).await == want },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_resource_server_verifies_refuses_follows_revocations_and_rotations() {
    // Arrange: a server whose new keys sign at once, and the example pointed at its issuer.
    let dir = own_key_dir(chrono::Duration::hours(1));
    let path = dir.path().to_owned();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        listen_at_issuer(s);
        s.keys.dir = path.clone();
        s.keys.publish_ahead = Some(0);
        s.keys.rescan_interval = 1;
    })
    .await;
    let feed_client = app.resource_server().await;
    let example = Example::start(&app.settings.issuer(), &feed_client);

    // A valid token is accepted.
    let user = app.seed_user().await;
    let good = app.login(&user).await.access_token;
    assert_eq!(example.call(&good).await, StatusCode::OK);

    // Tampered, expired and foreign tokens are refused.
    let claims = claims_of(&good);
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut more_scope = claims.clone();
    more_scope["scope"] = "admin profile".into();
    parts[1] = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&more_scope).unwrap())
    };
    assert_eq!(
        example.call(&parts.join(".")).await,
        StatusCode::UNAUTHORIZED,
        "tampered"
    );
    let mut expired = claims.clone();
    expired["exp"] = (chrono::Utc::now().timestamp() - 10).into();
    assert_eq!(
        example
            .call(&sign(&expired, &kid, &test_signing_pem()))
            .await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    let foreign_dir = tempfile::tempdir().unwrap();
    let (foreign_path, foreign_kid) = portcullis::keys::generate(foreign_dir.path(), 2048).unwrap();
    let foreign = sign(&claims, &foreign_kid, &std::fs::read(foreign_path).unwrap());
    assert_eq!(
        example.call(&foreign).await,
        StatusCode::UNAUTHORIZED,
        "foreign"
    );

    // Forged kids cannot make it hammer the issuer: one refetch per interval at most.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = example.jwks_fetches().await;
    for i in 0..20 {
        let forged = sign(&claims, &format!("forged-{i}"), &test_signing_pem());
        assert_eq!(example.call(&forged).await, StatusCode::UNAUTHORIZED);
    }
    assert!(
        example.jwks_fetches().await - before <= 1,
        "at most one refetch for twenty forged kids"
    );

    // Revocations reach it within seconds: a token's, a session's, a user's.
    let revoked = app.login(&user).await.access_token;
    assert_eq!(example.call(&revoked).await, StatusCode::OK);
    app.revoke(&revoked).await;
    within(3, &example, &revoked, StatusCode::UNAUTHORIZED).await;

    let session = app.login(&user).await;
    assert_eq!(example.call(&session.access_token).await, StatusCode::OK);
    app.revoke(session.refresh_token.as_deref().unwrap()).await;
    within(3, &example, &session.access_token, StatusCode::UNAUTHORIZED).await;

    let other = app.seed_user().await;
    let others = app.login(&other).await.access_token;
    assert_eq!(example.call(&others).await, StatusCode::OK);
    let resp = app
        .change_password(&others, &other.password, "a wholly new passphrase")
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    within(3, &example, &others, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        example.call(&good).await,
        StatusCode::OK,
        "the first login is untouched"
    );

    // A rotation: tokens of the new key verify without restarting the example.
    let (_, new_kid) = portcullis::keys::generate(&path, 2048).unwrap();
    let mut rotated = String::new();
    for _ in 0..50 {
        rotated = app.login(&user).await.access_token;
        if jsonwebtoken::decode_header(&rotated)
            .unwrap()
            .kid
            .as_deref()
            == Some(new_kid.as_str())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        jsonwebtoken::decode_header(&rotated).unwrap().kid.unwrap(),
        new_kid
    );
    within(3, &example, &rotated, StatusCode::OK).await;
    assert_eq!(
        example.call(&good).await,
        StatusCode::OK,
        "the old key's token still verifies"
    );
}
