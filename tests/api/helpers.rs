//! `spawn_app`: the real application, built as `main` builds it, on port 0 with its own database (a
//! temporary SQLite file, or a fresh PostgreSQL database created for the test and dropped after it).

use std::{
    future::Future,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, LazyLock},
    time::Duration,
};

use portcullis::{
    accounts::NewAccount,
    config::Settings,
    entity::user,
    oauth::secret,
    ports::{Clock, NewClient},
    startup::App,
    state::AppState,
    value::{grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope},
};
use reqwest::{Response, StatusCode};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use serde::Deserialize;
use serde_json::Value;

/// Runs a test body once on SQLite and once on PostgreSQL: `mod NAME { sqlite, postgres }`.
macro_rules! on_both_databases {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block)*) => {$(
        $(#[$meta])*
        async fn $name($backend: crate::helpers::Backend) $body
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// Runs a test body on each database with each deny list: `mod NAME { sqlite_memory, sqlite_redis,
/// postgres_memory, postgres_redis }`.
macro_rules! on_every_backend {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend, $deny:ident: Deny) $body:block)*) => {$(
        $(#[$meta])*
        async fn $name($backend: crate::helpers::Backend, $deny: crate::helpers::Deny) $body
        mod $name {
            use crate::helpers::{Backend, Deny};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                super::$name(Backend::Sqlite, Deny::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_redis() {
                super::$name(Backend::Sqlite, Deny::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_memory() {
                super::$name(Backend::Postgres, Deny::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                super::$name(Backend::Postgres, Deny::Redis).await
            }
        }
    )*};
}

/// A `redis-server` of the test's own, without persistence, to stop and start again empty.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which deny list a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deny {
    Memory,
    /// Real Redis at `TEST_REDIS_URL`, under a key prefix of the test's own.
    Redis,
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Settings with a deny list: Redis under a fresh prefix, or none (in-process).
pub fn with_deny(settings: &mut Settings, deny: Deny) {
    if deny == Deny::Redis {
        settings.redis.url = Some(redis_url());
        settings.redis.key_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One key for the whole test process: RSA generation is slow, and no test here rotates keys.
static KEYS: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    portcullis::keys::generate(dir.path(), 2048).expect("generate a test key");
    dir
});

pub fn test_keys_dir() -> &'static Path {
    KEYS.path()
}

/// The PEM of the test key, to forge tokens signed by the real key with other claims.
pub fn test_signing_pem() -> Vec<u8> {
    let entry = std::fs::read_dir(test_keys_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::read(entry.path()).unwrap()
}

/// A key folder of the test's own holding the test key, created `age` ago (by its file name), so that it
/// is the signing key; rotation tests add keys to it.
pub fn own_key_dir(age: chrono::Duration) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let created = chrono::Utc::now() - age;
    let path = dir
        .path()
        .join(format!("{}-test.pem", created.format("%Y%m%dT%H%M%SZ")));
    std::fs::write(&path, test_signing_pem()).unwrap();
    dir
}

/// Waits for a process the test started and returns what it printed; one still running after `limit` is
/// killed and the test fails, for a hung child would otherwise stall the whole suite, not fail one test.
pub fn finished_within(mut child: Child, limit: Duration) -> Output {
    let stdout = drain(child.stdout.take());
    finished_reading(child, stdout, limit)
}

/// As [`finished_within`], for a child whose standard output `stdout` is already draining.
pub fn finished_reading(
    mut child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    limit: Duration,
) -> Output {
    let stderr = drain(child.stderr.take());
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "the process had not finished after {limit:?} and was killed; it printed:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Everything `pipe` gives until it closes, read on a thread of its own: a child blocked writing to a
/// full pipe would never finish.
pub fn drain<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut read = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut read);
        }
        read
    })
}

/// What `read`, reading `child`'s output on a thread of its own, gives within `limit`; a child that has
/// not said it by then is killed and the test fails.
pub fn read_within<T: Send + 'static>(
    child: &mut Child,
    limit: Duration,
    read: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = said.send(read());
    });
    let Ok(said) = heard.recv_timeout(limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the process had not said what the test waits for after {limit:?} and was killed");
    };
    said
}

/// A port free now, for a test that must know its server's address (its issuer) before starting it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bind and issuer on a port chosen now, so that every URL in the metadata resolves to this server.
pub fn listen_at_issuer(s: &mut Settings) {
    let port = free_port();
    s.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
    s.server.issuer = format!("http://127.0.0.1:{port}").parse().unwrap();
}

pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database for one test, and a folder of its own (the SQLite file, the mail drop folder).
pub struct TestDatabase {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    dir,
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_url();
                let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at TEST_DATABASE_URL ({admin_url}) does not answer: {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap();
                admin.close().await.ok();
                let mut url = url::Url::parse(&admin_url).unwrap();
                url.set_path(&name);
                Self {
                    url: url.to_string(),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread of our own.
        let admin_url = postgres_url();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    admin.close().await.ok();
                }
            });
        })
        .join()
        .ok();
    }
}

pub struct TestApp {
    pub base: String,
    /// The server's clock: the system's, moved on by [`TestClock::advance`].
    pub clock: Arc<TestClock>,
    pub http: reqwest::Client,
    pub state: Arc<AppState>,
    pub settings: Settings,
    server: tokio::task::JoinHandle<()>,
    // Dropped last: the database outlives the server.
    pub db: Arc<TestDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn test_settings(db_url: &str) -> Settings {
    let mut s = Settings::defaults();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.database.url = db_url.to_owned();
    s.database.max_connections = 8;
    s.keys.dir = test_keys_dir().to_owned();
    // Login protection stays out of the way of tests about other things; its own tests set it.
    let lots = std::num::NonZeroU32::new(100_000).unwrap();
    s.rate_limit.login_per_ip = lots;
    s.rate_limit.login_per_user = lots;
    s.rate_limit.register_per_ip = lots;
    s.throttle.failures = 100_000;
    s.throttle.user_ceiling = 100_000;
    s
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let db = Arc::new(TestDatabase::new(backend).await);
    let mut settings = test_settings(&db.url);
    // Messages go into the test's own folder unless the test points them at an SMTP server.
    settings.mail.dir = db.dir.path().join("mail");
    configure(&mut settings);
    start(settings, db).await
}

/// The same, with the given deny list.
pub async fn spawn_app_on(backend: Backend, deny: Deny) -> TestApp {
    spawn_app_with(backend, |s| with_deny(s, deny)).await
}

async fn start(settings: Settings, db: Arc<TestDatabase>) -> TestApp {
    let clock = Arc::new(TestClock::default());
    let app = App::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("the app builds");
    let base = format!("http://{}", app.addr);
    let state = app.state.clone();
    let server = tokio::spawn(async move {
        app.run_until(std::future::pending()).await.unwrap();
    });
    TestApp {
        base,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        settings,
        server,
        db,
    }
}

/// The system's time plus an offset a test moves forward, so that what waits on time (throttling,
/// expiry) is tested without sleeping.
#[derive(Default)]
pub struct TestClock {
    ahead_ms: std::sync::atomic::AtomicI64,
}

impl TestClock {
    pub fn advance(&self, by: Duration) {
        self.ahead_ms
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let ahead = self.ahead_ms.load(std::sync::atomic::Ordering::SeqCst);
        chrono::Utc::now() + chrono::Duration::milliseconds(ahead)
    }
}

fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            portcullis::telemetry::init(&Settings::defaults().log);
        }
    });
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokenBody {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    pub scope: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

/// The password grant's parameters.
pub fn password_form<'a>(username: &'a str, password: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ]
}

impl TestApp {
    /// A second server on the same database, Redis prefix and keys: one more instance behind the
    /// balancer.
    pub async fn another_instance(&self) -> TestApp {
        start(self.settings.clone(), self.db.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers a new user through the API.
    pub async fn seed_user(&self) -> TestUser {
        let user = TestUser {
            username: format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            password: PASSWORD.to_owned(),
        };
        let resp = self.register(&user.username, &user.password).await;
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{}",
            resp.text().await.unwrap()
        );
        user
    }

    /// An admin user, created as the CLI does.
    pub async fn seed_admin(&self) -> TestUser {
        let username = format!("admin-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        self.state
            .accounts
            .register(NewAccount {
                username: &username,
                password: PASSWORD.into(),
                email: None,
                email_verified: false,
                is_admin: true,
            })
            .await
            .unwrap();
        TestUser {
            username,
            password: PASSWORD.to_owned(),
        }
    }

    /// A public client of the authorization code flow (with refresh), registered for `redirect_uris`.
    pub async fn seed_code_client(
        &self,
        prefix: &str,
        scopes: &str,
        redirect_uris: &[&str],
    ) -> String {
        self.seed_logout_client(prefix, scopes, redirect_uris, &[])
            .await
    }

    /// [`TestApp::seed_code_client`], with post-logout redirect URIs.
    pub async fn seed_logout_client(
        &self,
        prefix: &str,
        scopes: &str,
        redirect_uris: &[&str],
        post_logout_redirect_uris: &[&str],
    ) -> String {
        let id = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let parsed = |uris: &[&str]| -> Vec<RedirectUri> {
            uris.iter()
                .map(|u| RedirectUri::parse(u).unwrap())
                .collect()
        };
        self.state
            .clients
            .create(NewClient {
                id: &id,
                secret_hash: None,
                grant_types: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
                scopes: &Scope::parse(scopes).unwrap(),
                redirect_uris: &parsed(redirect_uris),
                post_logout_redirect_uris: &parsed(post_logout_redirect_uris),
            })
            .await
            .unwrap();
        id
    }

    /// A client created as the CLI creates one; confidential clients get a secret.
    pub async fn seed_client(
        &self,
        public: bool,
        grants: &[GrantType],
        scopes: &str,
    ) -> TestClient {
        let id = format!(
            "client-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let secret = (!public).then(|| format!("secret-{}", uuid::Uuid::new_v4().simple()));
        self.state
            .clients
            .create(NewClient {
                id: &id,
                secret_hash: secret.as_deref().map(secret::hash),
                grant_types: grants,
                scopes: &Scope::parse(scopes).unwrap(),
                redirect_uris: &[],
                post_logout_redirect_uris: &[],
            })
            .await
            .unwrap();
        TestClient { id, secret }
    }

    /// Marks a user disabled in the database only, as a row edited by hand would be.
    pub async fn disable_in_database(&self, user: &TestUser) {
        self.edit_user_row(user, user::Column::IsActive, false.into())
            .await;
    }

    /// Marks a user enabled in the database only.
    pub async fn enable_in_database(&self, user: &TestUser) {
        self.edit_user_row(user, user::Column::IsActive, true.into())
            .await;
    }

    /// Marks a user's password changed now in the database only, revoking nothing.
    pub async fn change_password_in_database(&self, user: &TestUser) {
        self.edit_user_row(
            user,
            user::Column::PasswordChangedAt,
            chrono::Utc::now().into(),
        )
        .await;
    }

    async fn edit_user_row(&self, user: &TestUser, column: user::Column, value: sea_orm::Value) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        user::Entity::update_many()
            .col_expr(column, Expr::value(value))
            .filter(user::Column::UsernameKey.eq(user.username.to_ascii_lowercase()))
            .exec(self.state.db.writer())
            .await
            .unwrap();
    }

    pub async fn register(&self, username: &str, password: &str) -> Response {
        self.http
            .post(self.url("/users"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /oauth/token` with a form body.
    pub async fn token(&self, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn token_basic(&self, id: &str, secret: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The password grant with no client at all; must succeed.
    pub async fn login(&self, user: &TestUser) -> TokenBody {
        let resp = self
            .token(&password_form(&user.username, &user.password))
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        resp.json().await.unwrap()
    }

    /// The refresh grant with no client (the default public client).
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// A successful refresh.
    pub async fn refreshed(&self, refresh_token: &str) -> TokenBody {
        let resp = self.refresh(refresh_token).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        resp.json().await.unwrap()
    }

    /// `POST /oauth/introspect` as a confidential client.
    pub async fn introspect(&self, client: &TestClient, token: &str) -> Response {
        self.http
            .post(self.url("/oauth/introspect"))
            .basic_auth(&client.id, client.secret.as_deref())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// `POST /oauth/revoke` with no client (the default public client).
    pub async fn revoke(&self, token: &str) -> Response {
        self.http
            .post(self.url("/oauth/revoke"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// Whether introspection calls the token active (asserting a `200`).
    pub async fn is_active(&self, client: &TestClient, token: &str) -> bool {
        let resp = self.introspect(client, token).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        resp.json::<Value>().await.unwrap()["active"]
            .as_bool()
            .unwrap()
    }

    /// A confidential client fit for introspection.
    pub async fn resource_server(&self) -> TestClient {
        self.seed_client(false, &[GrantType::ClientCredentials], "")
            .await
    }

    /// `GET path`, with no credentials.
    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// `GET path`, its body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// `GET path`, its body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// `POST /users/me/password` with the caller's token.
    pub async fn change_password(&self, access_token: &str, current: &str, new: &str) -> Response {
        self.http
            .post(self.url("/users/me/password"))
            .bearer_auth(access_token)
            .json(&serde_json::json!({"current_password": current, "new_password": new}))
            .send()
            .await
            .unwrap()
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.http
            .get(self.url("/users/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    /// Rows in a table, to show that a refused request wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        let backend = self.state.db.writer().get_database_backend();
        let row = self
            .state
            .db
            .writer()
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }
}

/// A transaction of the test's own on an app's PostgreSQL database, left open: the row locks of what it
/// wrote stand for a write in flight on another instance until it commits.
pub struct InFlight {
    pub txn: DatabaseTransaction,
    _db: DatabaseConnection,
}

impl TestApp {
    /// Runs `sql` (a write, or a `SELECT … FOR UPDATE`) in an [`InFlight`] transaction.
    pub async fn write_in_flight(&self, sql: &str) -> InFlight {
        let db = Database::connect(&self.db.url).await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared(sql).await.unwrap();
        InFlight { txn, _db: db }
    }

    /// Waits until `n` statements on this app's PostgreSQL database wait for a lock: the barrier after
    /// which requests have met a write in flight.
    pub async fn until_statements_wait_for_locks(&self, n: i64) {
        let waiting = "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                       AND backend_type = 'client backend' AND wait_event_type = 'Lock'";
        eventually(
            Duration::from_secs(10),
            "statements wait for locks",
            || async {
                let row = self
                    .state
                    .db
                    .writer()
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, waiting))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get::<i64>("", "n").unwrap() >= n
            },
        )
        .await;
    }
}

/// Polls `check` until it holds, failing after `within`: for what is promised within a bound.
pub async fn eventually<F: Future<Output = bool>>(
    within: Duration,
    what: &str,
    check: impl Fn() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PKCE verifier (RFC 7636's example) for the code flow's tests.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// The S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()))
}

/// A JWT's claims, read without checking anything: for asserting what a token says.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Asserts an error response: status, `error` code, `no-store`; returns the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "status for {code}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"], code, "{text}");
    assert_eq!(cache.as_deref(), Some("no-store"), "{text}");
    body
}

/// A browser at `/oauth/authorize`: the cookies the server set, sent back on every request.
pub struct Browser<'a> {
    app: &'a TestApp,
    pub cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, resp: &Response) {
        for set in resp.headers().get_all("set-cookie") {
            let (pair, _) = set.to_str().unwrap().split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    /// The same cookies, at another instance.
    pub fn at<'b>(&self, app: &'b TestApp) -> Browser<'b> {
        Browser {
            app,
            cookies: self.cookies.clone(),
        }
    }

    pub async fn get(&mut self, params: &[(String, String)]) -> Response {
        self.get_at("/oauth/authorize", params).await
    }

    pub async fn post(&mut self, params: &[(String, String)]) -> Response {
        self.post_to("/oauth/authorize", params).await
    }

    pub async fn get_at(&mut self, path: &str, params: &[(String, String)]) -> Response {
        let request = self.app.http.get(self.app.url(path)).query(params);
        self.send(request).await
    }

    pub async fn post_to(&mut self, path: &str, params: &[(String, String)]) -> Response {
        let request = self.app.http.post(self.app.url(path)).form(params);
        self.send(request).await
    }

    /// Sends `request` with this browser's cookies and keeps the ones the answer sets.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Response {
        let resp = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&resp);
        resp
    }

    /// Opens the sign-in page for `params` and submits it with `user`'s credentials; the answer to the
    /// submission.
    pub async fn sign_in(
        &mut self,
        params: &[(String, String)],
        user: &TestUser,
        password: &str,
    ) -> Response {
        let page = self.get(params).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let mut form = hidden_fields(&html);
        form.push(("username".into(), user.username.clone()));
        form.push(("password".into(), password.into()));
        self.post(&form).await
    }
}

/// The hidden inputs of the page's form, as a browser would submit them.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let attr = |name: &str| {
                let start = input.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                let end = start + input[start..].find('"').unwrap();
                unescape(&input[start..end])
            };
            (attr("name"), attr("value"))
        })
        .collect()
}

/// Text of an HTML attribute as the browser reads it.
pub fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A real SMTP server for the test: Python's aiosmtpd, storing every message it accepts in a Maildir.
pub struct SmtpSink {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> Self {
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect(
                "the SMTP sink needs Python's aiosmtpd: apt-get install python3-aiosmtpd (.ci/run does)",
            );
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        let sink = Self { child, port, dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sink;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("aiosmtpd did not listen on 127.0.0.1:{port}");
    }

    /// `mail.smtp_url` for it.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message it holds.
    pub fn messages(&self) -> Vec<Mail> {
        read_messages(&self.dir.path().join("maildir").join("new"))
    }

    /// Waits until it holds `n` messages (delivery follows the request that caused it) and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        eventually(
            Duration::from_secs(10),
            &format!("{n} messages"),
            || async { self.messages().len() >= n },
        )
        .await;
        self.messages()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages stored as files in `dir` (a Maildir's `new`, or the drop folder), oldest first.
pub fn read_messages(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, path)| Mail::parse(&std::fs::read_to_string(path).unwrap()))
        .collect()
}

/// One message as the recipient gets it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    /// The whole message, quoted-printable soft breaks joined and `=3D` decoded.
    pub text: String,
}

impl Mail {
    fn parse(raw: &str) -> Self {
        let header = |name: &str| {
            raw.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Self {
            to: header("To"),
            subject: header("Subject"),
            text: raw
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "="),
        }
    }

    /// The token of the first link to `{issuer}{path}?token=…` in the message.
    pub fn token(&self, issuer: &str, path: &str) -> Option<String> {
        let prefix = format!("{issuer}{path}?token=");
        let start = self.text.find(&prefix)? + prefix.len();
        Some(
            self.text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    }
}
