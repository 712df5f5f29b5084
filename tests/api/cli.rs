//! The command line, run as the operator runs it: the real binary, against the same database the
//! server then serves.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use reqwest::StatusCode;

use crate::helpers::{
    Backend, TestDatabase, assert_error, password_form, spawn_app_with, test_keys_dir,
};

pub fn portcullis(db_url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        // An empty folder: only the compiled-in defaults and these variables apply.
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS__DATABASE__URL", db_url)
        .env("PORTCULLIS__KEYS__DIR", test_keys_dir())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

on_both_databases! {
    async fn users_and_clients_made_on_the_command_line_work_at_the_token_endpoint(backend: Backend) {
        // Arrange: a user (password on stdin, trailing newline dropped) and a confidential client.
        let db = TestDatabase::new(backend).await;
        ok(&portcullis(&db.url, &["users", "create", "--username", "bob", "--email", "bob@example.com"], Some("correct horse battery\n")));
        let created = ok(&portcullis(&db.url, &["clients", "create", "--id", "backend", "--grants", "password,refresh_token", "--scopes", "profile"], None));
        let secret = created.lines().find_map(|l| l.strip_prefix("client_secret: ")).expect("the secret is printed once").to_owned();
        assert!(secret.len() >= 43, "256 random bits");
        assert!(ok(&portcullis(&db.url, &["users", "list"], None)).contains("bob"));
        let clients = ok(&portcullis(&db.url, &["clients", "list"], None));
        assert!(clients.contains("backend") && clients.contains("confidential") && !clients.contains(&secret));
        assert!(ok(&portcullis(&db.url, &["migrate", "status"], None)).contains("Applied"));

        // Act
        let url = db.url.clone();
        let app = spawn_app_with(backend, |s| s.database.url = url).await;
        let bob = password_form("bob", "correct horse battery");
        let login = || app.token_basic("backend", &secret, &bob);
        let resp = login().await;

        // Assert
        assert_eq!(resp.status(), StatusCode::OK);
        ok(&portcullis(&db.url, &["users", "disable", "bob"], None));
        assert_error(login().await, 400, "invalid_grant").await;
        ok(&portcullis(&db.url, &["users", "enable", "bob"], None));
        assert_eq!(login().await.status(), StatusCode::OK);
        ok(&portcullis(&db.url, &["clients", "delete", "backend"], None));
        // The password grant reads the client afresh: a deleted client is refused at once.
        assert_error(login().await, 401, "invalid_client").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_weak_password_and_a_bad_configuration_naming_the_key() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let weak = portcullis(
        &db.url,
        &["users", "create", "--username", "carol"],
        Some("password\n"),
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("common"));

    let bad = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["migrate", "status"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .env("PORTCULLIS__TOKENS__ACCESS_TTL", "soon")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("tokens.access_ttl"), "{stderr}");
}
