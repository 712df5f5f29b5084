//! The operational surface: liveness, readiness per dependency, metrics, request logs that never carry
//! a secret, and graceful shutdown.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

use crate::helpers::{
    Backend, PASSWORD, TestApp, TestDatabase, assert_error, drain, finished_reading, password_form,
    postgres_url, read_within, spawn_app, spawn_app_with, test_keys_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let app = spawn_app(Backend::Sqlite).await;
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_database_when_it_goes_away_and_recovers_when_it_returns() {
    // Arrange: a PostgreSQL database of the test's own, which the test can take away by renaming it.
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let (status, ready) = readiness(&app.http, &app.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["checks"]["database"], "ok");
    let name = app
        .settings
        .database
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let admin = Database::connect(&postgres_url()).await.unwrap();
    let away = format!("{name}_away");
    let kick = |db: &str| {
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        )
    };

    // Act: the database goes away.
    admin.execute_unprepared(&kick(&name)).await.unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{name}\" RENAME TO \"{away}\""))
        .await
        .unwrap();

    // Assert
    let (status, ready) = readiness(&app.http, &app.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["database"], "down");
    assert_eq!(ready["status"], "unavailable");
    // A page that needs it says so, rather than blaming the request.
    let page = app
        .http
        .get(app.url("/oauth/authorize"))
        .query(&[("client_id", "anyone"), ("response_type", "code")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Act: it comes back.
    admin.execute_unprepared(&kick(&away)).await.unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{away}\" RENAME TO \"{name}\""))
        .await
        .unwrap();
    let mut back = false;
    for _ in 0..50 {
        if readiness(&app.http, &app.url("/readyz")).await.0 == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "ready again without a restart");
}

async fn readiness(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let resp = http.get(url).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Every sample line: `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "labels: {line}");
        }
        out.push((series.to_owned(), value));
    }
    out
}

/// `/metrics`, checked to be OpenMetrics text.
async fn metrics_text(app: &TestApp) -> String {
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    text
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn methods_outside_http_s_own_are_counted_as_one_label() {
    let app = spawn_app(Backend::Sqlite).await;
    for method in ["FROB", "FROB2", "GET"] {
        app.http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/healthz"),
            )
            .send()
            .await
            .unwrap();
    }
    let text = metrics_text(&app).await;
    let samples = samples(&text);
    let healthz = |method: &str| {
        samples
            .iter()
            .filter(|(s, _)| {
                s.starts_with("portcullis_http_requests_total{")
                    && s.contains(r#"route="/healthz""#)
                    && s.contains(&format!(r#"method="{method}""#))
            })
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(healthz("other"), 2.0, "{text}");
    assert_eq!(healthz("GET"), 1.0, "{text}");
    assert!(!text.contains("FROB"), "{text}");
}

#[tokio::test]
async fn every_documented_operation_is_counted_under_its_own_route_and_any_other_path_as_other() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = app.get_json("/openapi.json").await;
    let mut operations = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(!operations.is_empty(), "{doc}");

    for (method, path) in &operations {
        // Each `{parameter}` filled in; the answer (often 401 or 400) does not matter, only its label.
        let concrete: Vec<_> = path
            .split('/')
            .map(|s| if s.starts_with('{') { "42" } else { s })
            .collect();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        app.http
            .request(method, app.url(&concrete.join("/")))
            .send()
            .await
            .unwrap();
    }
    // Paths no operation has, two of them shaped like one with a parameter.
    let strays = [
        "/users/me/sessions/42/more",
        "/admin/users/42/x/disable",
        "/stray-7f3a",
    ];
    for path in strays {
        app.http.post(app.url(path)).send().await.unwrap();
    }

    let text = metrics_text(&app).await;
    let samples = samples(&text);
    let sum = |prefix: &str| {
        samples
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    for (method, path) in &operations {
        assert!(
            sum(&format!(
                r#"portcullis_http_requests_total{{route="{path}",method="{method}","#
            )) >= 1.0,
            "{method} {path} has no series of its own:\n{text}"
        );
        assert!(
            sum(&format!(
                r#"portcullis_http_request_duration_seconds_count{{route="{path}"}}"#
            )) >= 1.0,
            "{path} has no latency of its own:\n{text}"
        );
    }
    assert_eq!(
        sum(r#"portcullis_http_requests_total{route="other",method="POST",status="404"}"#),
        strays.len() as f64,
        "{text}"
    );
    for path in strays {
        assert!(!text.contains(path), "{path} became a label:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_the_requests() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.rate_limit.login_per_user = std::num::NonZeroU32::new(2).unwrap()
    })
    .await;
    let scrape = || async { samples(&metrics_text(&app).await) };
    let user = app.seed_user().await;
    let before = scrape().await;

    let login = app.login(&user).await;
    app.refreshed(login.refresh_token.as_deref().unwrap()).await;
    let rt = app.login(&user).await.refresh_token.unwrap();
    assert_error(
        app.token(&password_form(&user.username, PASSWORD)).await,
        429,
        "rate_limited",
    )
    .await;
    app.refreshed(&rt).await;
    assert_error(app.refresh(&rt).await, 400, "invalid_grant").await;

    let after = scrape().await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(r#"portcullis_http_requests_total{route="/oauth/token",method="POST",status="200"}"#),
        4.0
    );
    assert_eq!(
        moved(r#"portcullis_http_requests_total{route="/oauth/token",method="POST",status="429"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"portcullis_tokens_issued_total{name="password"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"portcullis_tokens_issued_total{name="refresh_token"}"#),
        2.0
    );
    assert_eq!(
        moved(r#"portcullis_login_rejections_total{name="rate_limit.login_per_user"}"#),
        1.0
    );
    assert_eq!(moved("portcullis_refresh_reuse_detections_total"), 1.0);
    assert_eq!(
        moved(r#"portcullis_sessions_revoked_total{name="refresh_token_reuse"}"#),
        1.0
    );
    assert!(
        moved(r#"portcullis_http_request_duration_seconds_count{route="/oauth/token"}"#) >= 6.0
    );
    assert!(moved("portcullis_password_hash_wait_seconds_count") >= 2.0);
    assert_eq!(value(&after, "portcullis_password_hash_queue"), 0.0);

    app.me(&login.access_token).await;
    let later = scrape().await;
    assert_eq!(
        value(
            &later,
            r#"portcullis_deny_list_lookups_total{name="allowed"}"#
        ) - value(
            &after,
            r#"portcullis_deny_list_lookups_total{name="allowed"}"#
        ),
        1.0
    );
}

/// Reads `log` into `read` up to the line that says where the server listens; that address, or `None`
/// when the log ends first.
fn listening_at(log: &mut BufReader<ChildStdout>, read: &mut String) -> Option<String> {
    loop {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        read.push_str(&line);
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            return Some(event["addr"].as_str()?.to_owned());
        }
    }
}

/// The real binary, logging JSON at debug level into a pipe.
struct Served {
    child: Child,
    base: String,
    /// The log up to the line that says where the server listens.
    read: String,
    /// The rest of the log, drained while the server runs.
    rest: std::thread::JoinHandle<Vec<u8>>,
    _cwd: tempfile::TempDir,
}

impl Served {
    /// Starts the server on a port it chooses, and waits until it says which: a port chosen here and
    /// freed for it could be taken meanwhile by another test's server, which would then answer.
    fn start(db_url: &str, extra: &[(&str, &str)]) -> Self {
        let cwd = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("serve")
            .current_dir(cwd.path())
            .env_remove("PORTCULLIS_CONFIG")
            .env("PORTCULLIS__SERVER__BIND", "127.0.0.1:0")
            .env("PORTCULLIS__DATABASE__URL", db_url)
            .env("PORTCULLIS__KEYS__DIR", test_keys_dir())
            .env("PORTCULLIS__LOG__FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut log = BufReader::new(child.stdout.take().unwrap());
        let (log, read, addr) = read_within(&mut child, Duration::from_secs(30), move || {
            let mut read = String::new();
            let addr = listening_at(&mut log, &mut read);
            (log, read, addr)
        });
        let Some(addr) = addr else {
            let _ = child.wait();
            panic!("the server stopped before it listened:\n{read}");
        };
        Self {
            child,
            base: format!("http://{addr}"),
            read,
            rest: drain(Some(log)),
            _cwd: cwd,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then everything it printed; a server that has not stopped within 30 s fails the test.
    fn stop(self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let stopped = finished_reading(self.child, self.rest, Duration::from_secs(30));
        let mut out = self.read;
        out.push_str(&String::from_utf8_lossy(&stopped.stdout));
        out.push_str(&String::from_utf8_lossy(&stopped.stderr));
        (stopped.status, out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_token_secret_or_hash_is_ever_logged() {
    // Arrange: the real server, a confidential client made as the CLI makes it.
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = Served::start(&db.url, &[]);
    let http = reqwest::Client::new();
    let state_db = portcullis::store::connect(&db.url, 1).await.unwrap();
    let secret = "a-client-secret-that-must-never-appear-in-logs";
    use portcullis::ports::{Clients as _, Users as _};
    portcullis::store::clients::ClientStore::new(state_db.clone())
        .create(portcullis::ports::NewClient {
            id: "logged-client",
            secret_hash: Some(portcullis::oauth::secret::hash(secret)),
            grant_types: &[
                portcullis::value::grant_type::GrantType::Password,
                portcullis::value::grant_type::GrantType::RefreshToken,
            ],
            scopes: &portcullis::value::scope::Scope::parse("profile").unwrap(),
            redirect_uris: &[],
            post_logout_redirect_uris: &[],
        })
        .await
        .unwrap();
    let password = "a-password-that-must-never-appear";
    let wrong = "a-wrong-password-that-must-never-appear";
    let token = |form: Vec<(&str, &str)>| {
        http.post(server.url("/oauth/token"))
            .basic_auth("logged-client", Some(secret))
            .form(&form)
            .send()
    };

    // Act: register, log in, refresh, introspect, revoke, fail a login, and present garbage.
    let resp = http
        .post(server.url("/users"))
        .json(&serde_json::json!({"username": "logger", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let login: Value = token(password_form("logger", password).to_vec())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let refreshed: Value = token(vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
    ])
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    http.get(server.url("/users/me"))
        .bearer_auth(&access2)
        .send()
        .await
        .unwrap();
    for revoked in [&access, &refresh2] {
        http.post(server.url("/oauth/revoke"))
            .basic_auth("logged-client", Some(secret))
            .form(&[("token", revoked.as_str())])
            .send()
            .await
            .unwrap();
    }
    token(password_form("logger", wrong).to_vec())
        .await
        .unwrap();
    token(vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
    ])
    .await
    .unwrap();
    http.post(server.url("/oauth/token"))
        .basic_auth("logged-client", Some("wrong-secret-never-logged"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    let stored_hash: String = {
        let user = portcullis::store::users::UserStore::new(state_db.clone())
            .find_by_username("logger")
            .await
            .unwrap()
            .unwrap();
        user.password_hash
    };
    let (_, logs) = server.stop();

    // Assert: the log is there, and none of the secrets are in it.
    assert!(
        logs.contains(r#""message":"request""#),
        "request lines were logged:\n{logs}"
    );
    assert!(logs.contains(r#""status":400"#), "refusals were logged too");
    let hash_part = stored_hash.rsplit('$').next().unwrap();
    for (what, secret_value) in [
        ("the password", password),
        ("a wrong password", wrong),
        ("the client secret", secret),
        ("a wrong client secret", "wrong-secret-never-logged"),
        ("an access token", &access),
        ("a refreshed access token", &access2),
        ("a refresh token", &refresh),
        ("a rotated refresh token", &refresh2),
        ("the password hash", hash_part),
    ] {
        assert!(!logs.contains(secret_value), "{what} appears in the log");
    }
    // Nor a fragment long enough to matter: the signature part of a token.
    assert!(!logs.contains(access.rsplit('.').next().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mailed_link_or_its_token_is_ever_logged() {
    // Arrange: the real server at debug level, mailing to a real SMTP server.
    let sink = crate::helpers::SmtpSink::start();
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = Served::start(&db.url, &[("PORTCULLIS__MAIL__SMTP_URL", &sink.url())]);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(server.url(path)).json(&body).send();

    // Act: register with an address, ask for a reset, open both links, use both, use one again.
    let body = serde_json::json!({"username": "mailed", "password": PASSWORD, "email": "mailed@example.com"});
    assert_eq!(
        post("/users", body).await.unwrap().status(),
        StatusCode::CREATED
    );
    let body = serde_json::json!({"username": "mailed"});
    assert_eq!(
        post("/users/password-reset", body).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let mails = sink.wait_for(2).await;
    let issuer = "http://127.0.0.1:8080";
    let verify = mails[0]
        .token(issuer, "/verify-email")
        .expect("a verification link");
    let reset = mails[1]
        .token(issuer, "/password-reset")
        .expect("a reset link");
    for (path, token) in [("/verify-email", &verify), ("/password-reset", &reset)] {
        let page = http
            .get(server.url(path))
            .query(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
    let body = serde_json::json!({"token": verify});
    assert_eq!(
        post("/users/email-verification/confirm", body.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post("/users/email-verification/confirm", body)
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let body = serde_json::json!({"token": reset, "new_password": "another long passphrase"});
    assert_eq!(
        post("/users/password-reset/confirm", body)
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let (_, logs) = server.stop();

    // Assert: the flows were logged, and neither token nor link is in the log.
    assert!(logs.contains("password-reset link sent"), "{logs}");
    for (what, secret) in [
        ("the verification token", &verify),
        ("the reset token", &reset),
    ] {
        assert!(!logs.contains(secret.as_str()), "{what} appears in the log");
    }
    assert!(!logs.contains("token="), "a link appears in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_the_server_exits() {
    // Arrange: one hashing slot, so that registrations queue and take a while together.
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = Served::start(
        &db.url,
        &[
            ("PORTCULLIS__PASSWORD__HASH_CONCURRENCY", "1"),
            ("PORTCULLIS__PASSWORD__HASH_QUEUE_WAIT_MS", "30000"),
            ("PORTCULLIS__RATE_LIMIT__REGISTER_PER_IP", "1000"),
            ("RUST_LOG", "info"),
        ],
    );
    let http = reqwest::Client::new();
    let url = server.url("/users");
    let in_flight: Vec<_> = (0..12)
        .map(|i| {
            let req = http
                .post(&url)
                .json(&serde_json::json!({"username": format!("slow-{i}"), "password": PASSWORD}));
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    // Every registration has arrived: each is either hashing, waiting for the slot, or answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let seen = samples(&text);
        let arrived = value(&seen, "portcullis_password_hash_queue")
            + value(
                &seen,
                r#"portcullis_http_requests_total{route="/users",method="POST",status="201"}"#,
            );
        if arrived >= 12.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the registrations never all arrived: {text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Act
    let stopping = tokio::task::spawn_blocking(move || server.stop());

    // Assert: every request already sent is answered in full.
    for request in in_flight {
        let status = request
            .await
            .unwrap()
            .expect("an answer, not a dropped connection");
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, logs) = stopping.await.unwrap();
    assert!(status.success(), "a clean exit: {logs}");
    assert!(logs.contains("shutting down"));
}
