//! The command line, run as the operator runs it: the real binary, against the same database the
//! server then serves.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use reqwest::StatusCode;

use crate::helpers::{
    Backend, TestDatabase, assert_error, finished_within, password_form, spawn_app_with,
    test_keys_dir,
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
    finished_within(child, Duration::from_secs(60))
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

/// The refusal of a command: it fails, and its message, on standard error, is returned.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "refused, but it succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

on_both_databases! {
    async fn clients_keep_their_redirect_uris_and_a_uri_the_rules_refuse_creates_nothing(backend: Backend) {
        // Arrange
        let db = TestDatabase::new(backend).await;
        let create = |id: &str, extra: &[&str]| {
            let mut args = vec!["clients", "create", "--id", id, "--public", "--grants", "authorization_code,refresh_token"];
            args.extend_from_slice(extra);
            portcullis(&db.url, &args, None)
        };

        // Act
        ok(&create("spa", &[
            "--redirect-uri", "https://app.example.com/cb",
            "--redirect-uri", "http://127.0.0.1/cb",
            "--post-logout-redirect-uri", "https://app.example.com/bye",
        ]));
        let plain_http = refused(&create("plain-http", &["--redirect-uri", "http://app.example.com/cb"]));
        let fragment = refused(&create("fragment", &["--redirect-uri", "https://app.example.com/cb#top"]));
        let bad_logout = refused(&create("bad-logout", &[
            "--redirect-uri", "https://app.example.com/cb",
            "--post-logout-redirect-uri", "https://app.example.com/bye#top",
        ]));
        let without = refused(&create("without", &[]));

        // Assert: the listing shows each list in its own column, after the columns it had.
        let listed = ok(&portcullis(&db.url, &["clients", "list"], None));
        let mut lines = listed.lines();
        assert_eq!(
            lines.next().unwrap(),
            "client_id\ttype\tgrant_types\tscopes\tcreated_at\tredirect_uris\tpost_logout_redirect_uris"
        );
        let spa: Vec<&str> = lines.find(|l| l.starts_with("spa\t")).expect("spa is listed").split('\t').collect();
        assert_eq!(spa.len(), 7, "{spa:?}");
        assert_eq!(spa[..4], ["spa", "public", "authorization_code refresh_token", ""]);
        assert_eq!(spa[5], "https://app.example.com/cb http://127.0.0.1/cb");
        assert_eq!(spa[6], "https://app.example.com/bye");

        // Each refusal names the URI and the rule it breaks, and nothing of it was stored.
        assert!(plain_http.contains("http://app.example.com/cb") && plain_http.contains("use https"), "{plain_http}");
        assert!(fragment.contains("https://app.example.com/cb#top") && fragment.contains("fragment"), "{fragment}");
        assert!(
            bad_logout.contains("post-logout redirect URI https://app.example.com/bye#top") && bad_logout.contains("fragment"),
            "{bad_logout}"
        );
        assert!(without.contains("authorization_code") && without.contains("at least one redirect URI"), "{without}");
        let ids: Vec<&str> = listed.lines().skip(1).filter_map(|l| l.split('\t').next()).collect();
        assert_eq!(ids, ["spa"]);
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bad = finished_within(bad, Duration::from_secs(60));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("tokens.access_ttl"), "{stderr}");
}

/// A secret the token endpoint could never accept (over 256 bytes) is refused when the client is made,
/// as one too short is; the longest accepted authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_accepts_only_client_secrets_the_token_endpoint_accepts() {
    // Arrange
    let db = TestDatabase::new(Backend::Sqlite).await;
    let create = |id: &str, secret: &str| {
        portcullis(
            &db.url,
            &[
                "clients",
                "create",
                "--id",
                id,
                "--grants",
                "client_credentials",
                "--secret-stdin",
            ],
            Some(&format!("{secret}\n")),
        )
    };
    let longest = "s".repeat(256);

    // Act
    let too_long = refused(&create("too-long", &"s".repeat(257)));
    let too_short = refused(&create("too-short", &"s".repeat(31)));
    ok(&create("longest", &longest));

    // Assert
    assert!(too_long.contains("at most 256"), "{too_long}");
    assert!(too_short.contains("at least 32"), "{too_short}");
    let listed = ok(&portcullis(&db.url, &["clients", "list"], None));
    assert!(
        !listed.contains("too-long") && !listed.contains("too-short"),
        "{listed}"
    );
    let url = db.url.clone();
    let app = spawn_app_with(Backend::Sqlite, |s| s.database.url = url).await;
    let resp = app
        .token_basic("longest", &longest, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// The deadline every command of these tests runs under: one that hangs is killed, and its test fails
/// instead of stalling the suite.
#[test]
#[should_panic(expected = "had not finished after")]
fn a_command_that_hangs_is_killed_and_fails_its_test() {
    let child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    finished_within(child, Duration::from_millis(200));
}
