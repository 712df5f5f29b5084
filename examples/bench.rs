//! `make bench`: measures every hot path of the release server against this machine's own limits.
//!
//! For SQLite and for PostgreSQL with Redis in turn, first the limits, in this process: argon2id hashes
//! per second per core with the configured parameters and as many hashes at once as the server runs, and
//! RS256 signatures and verifications per second on one thread through the same jsonwebtoken backend the
//! server uses. Then it starts `target/release/portcullis` itself and drives each scenario with many
//! concurrent connections, reading the server's CPU time from `/proc/PID/stat` and its peak RSS from
//! `/proc/PID/status` (reset between scenarios). A scenario bounded by a limit is judged against that limit
//! measured again just before and just after it. It prints one table: each scenario's requests per server
//! CPU-second next to the limit that bounds it. The browser flow's rows (a whole sign-in round, a signed-in
//! authorize, the redemption of codes issued before the row counts, and the two as a pair) run on builds
//! that have it.
//!
//! On PostgreSQL it then seeds the tables with what months of logins leave without housekeeping
//! (500,000 sessions, 5,000,000 refresh tokens), measures refresh and introspection again beside their
//! figures from just before, and times one `portcullis purge` over them (the rows named "large tables";
//! docs/benchmarks.md).
//!
//! `BENCH_SECONDS` (default 5) sets each scenario's length; `BENCH_DATABASE_URL` / `BENCH_REDIS_URL` the
//! PostgreSQL maintenance URL and Redis (defaults: the standard local ports; a local PostgreSQL is reached
//! without TLS unless the URL names an `sslmode`). For comparing two builds:
//! `BENCH_ONLY` keeps the rows whose "backend scenario" contains one of its comma-separated words,
//! `BENCH_SERVER` names another server binary, and `BENCH_BASELINE` a second one, the baseline, measured
//! beside it in the same run: both servers run at once, each on a database of its own migrated by its
//! own binary, and each row is measured in twelve turns a build, taken A B B A A B … (which build is A
//! alternates from row to row), so that the machine's drift falls on both alike; the login-flood rows too,
//! each turn measuring the idle pair and then the pair beside the flood, on the CPU outside the hashing
//! threads. A second table then gives each row's
//! requests per server CPU-second and p99 on both builds, and the current build's as a percentage of the
//! baseline's. The large tables are left out beside a baseline.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const CONNECTIONS: usize = 16;

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let machine = Machine::new();
    let builds = builds()?;
    // The large tables are seeded for one build: beside a baseline, whose every row is measured twice,
    // they are left out.
    let with_large = builds.len() == 1;
    if !with_large {
        println!("the large tables are not measured beside a baseline");
    }
    let mut rows = Vec::new();
    let mut large = Vec::new();
    for backend in [Backend::Sqlite, Backend::PostgresRedis] {
        if !backend
            .scenarios(with_large)
            .any(|s| wanted(backend.name(), s))
        {
            continue;
        }
        // Measured again before each backend: a shared machine's speed drifts over minutes, and a ratio
        // means something only against the limit of the same stretch of time.
        let limits = machine.limits();
        println!(
            "machine limits before {}, per core: argon2id {:.1} hashes/s ({:.1} on one thread alone), RS256 {:.0} signs/s, {:.0} verifications/s",
            backend.name(),
            limits.argon2,
            limits.argon2_alone,
            limits.sign,
            limits.verify
        );
        let (measured, tables) = runtime.block_on(run_backend(
            backend,
            Duration::from_secs(seconds),
            &machine,
            &builds,
            with_large,
        ))?;
        rows.extend(measured);
        large.extend(tables);
    }
    if !rows.is_empty() {
        print_table(&rows);
        if builds.len() > 1 {
            print_comparison(&rows);
        }
    }
    for tables in &large {
        tables.print();
    }
    Ok(())
}

const SCENARIOS: [&str; 13] = [
    "password grant",
    "sign-in round (code flow)",
    "authorize, signed in (SSO)",
    "code redemption",
    "SSO authorize + code redemption",
    "refresh (rotation)",
    "client_credentials",
    "introspection",
    "GET /users/me",
    "JWKS",
    "JWKS, If-None-Match",
    "JWKS under a login flood",
    "introspection under a login flood",
];

/// The rows of the large-tables section, on PostgreSQL only: refresh and introspection again once the
/// tables hold what months of logins leave without housekeeping, and one housekeeping pass over them.
const LARGE: [&str; 3] = [
    "refresh (rotation), large tables",
    "introspection, large tables",
    "purge of large tables",
];

/// Whether `BENCH_ONLY` selects this row (every row when it is unset): one of its words is part of
/// "backend scenario", so `sqlite`, `refresh` and `sqlite refresh` all work.
fn wanted(backend: &str, scenario: &str) -> bool {
    let row = format!("{backend} {scenario}").to_lowercase();
    std::env::var("BENCH_ONLY").map_or(true, |only| {
        only.split(',')
            .map(|w| w.trim().to_lowercase())
            .any(|w| !w.is_empty() && row.contains(&w))
    })
}

/// What the machine can do per core, measured in-process through the server's own code paths.
struct Limits {
    argon2: f64,
    argon2_alone: f64,
    sign: f64,
    verify: f64,
}

/// The inputs of the limit measurements, prepared once.
struct Machine {
    /// The server's argon2id parameters (argon2's defaults, OWASP's m=19456 KiB, t=2, p=1).
    params: Params,
    /// A signing key as the server holds it, so that the limits are the server's own signer and verifier.
    key: Arc<portcullis::keys::Key>,
    claims: Value,
    token: String,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        portcullis::keys::generate(dir.path(), 2048).unwrap();
        let keys =
            portcullis::keys::KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900))
                .unwrap();
        let key = keys.current().signing().clone();
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": "http://127.0.0.1:8080", "sub": uuid::Uuid::new_v4(), "aud": "portcullis",
            "exp": now + 900, "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4(), "client_id": "portcullis-default",
            "scope": "profile", "sid": uuid::Uuid::new_v4(), "username": "someone"});
        let token = portcullis::oauth::issuer::encode(&claims, &key).unwrap();
        Self {
            params: Params::default(),
            key,
            claims,
            token,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            argon2: self.argon2(),
            argon2_alone: self.argon2_on(1),
            sign: self.sign(),
            verify: self.verify(),
        }
    }

    /// argon2id hashes per second per core, with as many hashes at once as the server runs (one per
    /// core, `password.hash_concurrency = 0`), each thread reusing one block buffer as the server's
    /// hashing threads do. Two hashes of 19 MiB each share one last-level cache and memory bus, so a core
    /// hashes about 7 % slower beside another hashing core than alone; a login flood keeps every core
    /// hashing, so that is the limit it is judged against. `threads = 1` gives the figure alone.
    fn argon2_on(&self, threads: usize) -> f64 {
        let params = &self.params;
        let rates: Vec<f64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(move || {
                        let argon =
                            Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                        let mut blocks = vec![Block::default(); params.block_count()];
                        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
                        per_second(LIMIT_BUDGET, || {
                            argon
                                .hash_password_into_with_memory(
                                    PASSWORD.as_bytes(),
                                    b"sixteen byte salt",
                                    &mut out,
                                    &mut blocks,
                                )
                                .unwrap();
                        })
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        rates.iter().sum::<f64>() / threads as f64
    }

    fn argon2(&self) -> f64 {
        self.argon2_on(
            portcullis::config::Settings::defaults()
                .password
                .hashing_threads(),
        )
    }

    fn sign(&self) -> f64 {
        per_second(LIMIT_BUDGET, || {
            portcullis::oauth::issuer::encode(&self.claims, &self.key).unwrap();
        })
    }

    fn verify(&self) -> f64 {
        per_second(LIMIT_BUDGET, || {
            jsonwebtoken::decode_header(&self.token).unwrap();
            portcullis::oauth::verifier::decode::<portcullis::value::claims::AccessClaims>(
                &self.token,
                &self.key,
            )
            .unwrap();
        })
    }
}

const LIMIT_BUDGET: Duration = Duration::from_secs(2);

/// Runs a scenario bounded by a machine limit, measuring that limit just before and just after it: the
/// machine's speed drifts by tens of percent over minutes, and a ratio is only fair against the limit of
/// the same stretch of time. The mean of the two is the bound.
async fn bracketed<T>(limit: impl Fn() -> f64, scenario: impl Future<Output = T>) -> (f64, T) {
    let before = limit();
    let result = scenario.await;
    ((before + limit()) / 2.0, result)
}

fn per_second(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    PostgresRedis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::PostgresRedis => "PostgreSQL+Redis",
        }
    }

    /// Its rows, the large tables' among them when `with_large`.
    fn scenarios(self, with_large: bool) -> impl Iterator<Item = &'static str> {
        let large: &[&str] = match self {
            Self::PostgresRedis if with_large => &LARGE,
            _ => &[],
        };
        SCENARIOS.iter().chain(large).copied()
    }
}

/// One line of the table.
struct Row {
    backend: &'static str,
    /// The build's label beside a baseline, else empty.
    build: &'static str,
    scenario: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    requests: u64,
    /// (name of the limit, its value per core, the target fraction of it or an absolute target)
    bound: Bound,
}

impl Row {
    /// Requests per server CPU-second.
    fn per_cpu(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.requests as f64 / self.cpu_s
        } else {
            f64::NAN
        }
    }
}

#[derive(Clone, Copy)]
enum Bound {
    Fraction(&'static str, f64, f64),
    Absolute(f64),
    /// p99 under the login flood against the idle p99 of the same request, at most this many times it.
    Latency {
        idle_p99: f64,
        at_most: f64,
    },
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds of the server so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_of(&format!("/proc/{}/stat", self.pid())).1
    }

    /// User + system CPU seconds of the server so far outside its password-hashing threads (named
    /// `argon2-N` by every build): the CPU a login flood leaves to everything else.
    fn cpu_seconds_besides_hashing(&self) -> f64 {
        let hashing: f64 = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .map(|task| cpu_of(&task.path().join("stat").to_string_lossy()))
            .filter(|(name, _)| name.starts_with("argon2-"))
            .map(|(_, cpu)| cpu)
            .sum();
        self.cpu_seconds() - hashing
    }

    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

/// A process's or thread's name and user + system CPU seconds, from its `stat` file.
fn cpu_of(stat_path: &str) -> (String, f64) {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The name is in parentheses and may contain spaces; the fields follow it.
    let (name, rest) = stat
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    (name.to_owned(), ticks / 100.0)
}

/// A server binary to measure, and the word its rows carry beside a baseline (empty when it runs alone).
struct Build {
    label: &'static str,
    binary: PathBuf,
}

/// `BENCH_SERVER` (else this checkout's release build), after `BENCH_BASELINE` when that is set.
fn builds() -> anyhow::Result<Vec<Build>> {
    let current = server_binary()?;
    let Some(baseline) = std::env::var_os("BENCH_BASELINE").map(PathBuf::from) else {
        return Ok(vec![Build {
            label: "",
            binary: current,
        }]);
    };
    anyhow::ensure!(
        baseline.exists(),
        "BENCH_BASELINE: no such file: {}",
        baseline.display()
    );
    Ok(vec![
        Build {
            label: "baseline",
            binary: baseline,
        },
        Build {
            label: "current",
            binary: current,
        },
    ])
}

/// One build's server under test, with a database of its own.
struct Target {
    /// Its build's label.
    build: &'static str,
    binary: PathBuf,
    server: Server,
    api: Arc<Api>,
    db_url: String,
    /// The PostgreSQL database made for it, dropped at the end: the large tables take gigabytes.
    made: Option<(sea_orm::DatabaseConnection, String)>,
}

/// What the scenarios' requests need of the server they go to.
struct Api {
    http: reqwest::Client,
    base: String,
    /// Registered through the API, one per connection.
    users: Vec<String>,
    /// An access token of the first user.
    access: String,
    /// The JWKS's current `ETag`.
    etag: String,
    /// Per connection, the newest refresh token of one login's chain.
    chains: Vec<tokio::sync::Mutex<String>>,
    /// Per connection, a browser sign-in session's cookie; empty for a build without the code flow.
    sign_ins: Vec<String>,
    /// Per connection, codes issued before the redemption row starts counting, for it to redeem.
    codes: Vec<std::sync::Mutex<Vec<String>>>,
}

impl Target {
    /// Makes the database, migrated by the build itself so that each build runs on its own schema, and
    /// the clients the scenarios use; starts the server; registers the users and logs them in.
    async fn start(
        backend: Backend,
        build: &Build,
        n: usize,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut made = None;
        let (db_url, redis_url) = match backend {
            Backend::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                ),
                None,
            ),
            Backend::PostgresRedis => {
                let admin_url = std::env::var("BENCH_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("portcullis_bench_{}_{n}", std::process::id());
                let admin = Database::connect(&admin_url).await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .await?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await?;
                let mut url = url::Url::parse(&admin_url)?;
                url.set_path(&name);
                same_host_without_tls(&mut url);
                made = Some((admin, name));
                let redis = std::env::var("BENCH_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
                (url.to_string(), Some(redis))
            }
        };
        run_command(&build.binary, &["migrate"], &db_url, None).await?;
        // The clients the scenarios use, made by the build's own command line, on its own schema.
        for id in ["bench-service", "bench-rs"] {
            let args = [
                "clients",
                "create",
                "--id",
                id,
                "--grants",
                "client_credentials",
                "--scopes",
                "orders.read",
                "--secret-stdin",
            ];
            run_command(&build.binary, &args, &db_url, Some(SECRET)).await?;
        }
        // The code flow's client, on a build that has the flow: a baseline from before it refuses the
        // command, and skips the code flow's rows.
        let has_code_flow = {
            let args = [
                "clients",
                "create",
                "--id",
                CODE_CLIENT,
                "--public",
                "--grants",
                "authorization_code,refresh_token",
                "--scopes",
                "openid profile",
                "--redirect-uri",
                CODE_REDIRECT,
            ];
            match run_command(&build.binary, &args, &db_url, None).await {
                Ok(_) => true,
                Err(_) if build.label == "baseline" => false,
                Err(e) => return Err(e),
            }
        };
        let keys = dir.path().join("keys");
        portcullis::keys::generate(&keys, 2048)?;
        let server = start_server(&build.binary, &db_url, redis_url.as_deref(), &keys, dir)?;

        let mut api = Api {
            http: http.clone(),
            base: server.base.clone(),
            users: (0..CONNECTIONS)
                .map(|i| format!("bench-user-{i}"))
                .collect(),
            access: String::new(),
            etag: String::new(),
            chains: Vec::new(),
            sign_ins: Vec::new(),
            codes: (0..CONNECTIONS).map(|_| Default::default()).collect(),
        };
        for user in &api.users {
            let resp = http
                .post(format!("{}/users", api.base))
                .json(&json!({"username": user, "password": PASSWORD}))
                .send()
                .await?;
            anyhow::ensure!(
                resp.status() == StatusCode::CREATED,
                "registration: {}",
                resp.status()
            );
        }
        let first: Value = api.login(&api.users[0]).await?.json().await?;
        api.access = first["access_token"].as_str().unwrap().to_owned();
        // Refresh chains: every request presents a fresh, never-used refresh token.
        let mut chains = Vec::new();
        for user in &api.users {
            let body: Value = api.login(user).await?.json().await?;
            chains.push(tokio::sync::Mutex::new(
                body["refresh_token"].as_str().unwrap().to_owned(),
            ));
        }
        api.chains = chains;
        if has_code_flow {
            for user in &api.users {
                let (_, cookie) = sign_in(&api, user)
                    .await
                    .ok_or_else(|| anyhow::anyhow!("the sign-in page did not sign {user} in"))?;
                api.sign_ins.push(cookie);
            }
        }
        api.etag = http
            .get(format!("{}/.well-known/jwks.json", api.base))
            .send()
            .await?
            .headers()["etag"]
            .to_str()?
            .to_owned();
        Ok(Self {
            build: build.label,
            binary: build.binary.clone(),
            server,
            api: Arc::new(api),
            db_url,
            made,
        })
    }

    /// Stops the server, then drops its database.
    async fn stop(self) -> anyhow::Result<()> {
        drop(self.server);
        if let Some((admin, name)) = self.made {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await?;
        }
        Ok(())
    }
}

/// The targets in the order the next row measures them: beside a baseline the order flips from row to
/// row, so that neither build is always the one measured first.
fn in_turn(targets: &mut [Target]) -> Vec<&Target> {
    targets.reverse();
    targets.iter().collect()
}

/// The builds that have the code flow (a baseline may not).
fn with_code_flow(turn: Vec<&Target>) -> Vec<&Target> {
    turn.into_iter()
        .filter(|t| !t.api.sign_ins.is_empty())
        .collect()
}

/// How many turns each build gets in a row measured beside a baseline.
const TURNS: u32 = 12;

/// What driving a scenario gave: requests answered, their latencies, server CPU-seconds, peak RSS (MiB).
type Driven = (u64, Vec<f64>, f64, f64);

/// Runs `turn` for each target, [`TURNS`] times a build in the order A B B A A B … beside a baseline
/// (once alone), and sums each build's turns, so that the machine's drift over the row falls on both
/// builds alike (docs/benchmarks.md). `turn` gets the target and the length of one turn.
async fn in_turns<const N: usize, F, Fut>(
    targets: &[&Target],
    length: Duration,
    turn: F,
) -> Vec<[Driven; N]>
where
    F: Fn(usize, Duration) -> Fut,
    Fut: std::future::Future<Output = [Driven; N]>,
{
    let turns = if targets.len() > 1 { TURNS } else { 1 };
    let mut sums: Vec<[Driven; N]> = (0..targets.len())
        .map(|_| std::array::from_fn(|_| (0, Vec::new(), 0.0, 0.0)))
        .collect();
    for k in 0..turns {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if k % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let measured = turn(i, length / turns).await;
            for (sum, (requests, latencies, cpu, rss)) in sums[i].iter_mut().zip(measured) {
                sum.0 += requests;
                sum.1.extend(latencies);
                sum.2 += cpu;
                sum.3 = sum.3.max(rss);
            }
        }
    }
    for sum in sums.iter_mut().flatten() {
        sum.1.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    sums
}

/// Drives one scenario on each target for `length` in all, in turns beside a baseline ([`in_turns`]).
async fn side_by_side<F, Fut>(
    targets: &[&Target],
    length: Duration,
    connections: usize,
    request: F,
) -> Vec<Driven>
where
    F: Fn(Arc<Api>, usize, usize) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    in_turns(targets, length, |i, length| async move {
        [drive(targets[i], length, connections, request).await]
    })
    .await
    .into_iter()
    .map(|[m]| m)
    .collect()
}

/// One turn of the flood rows on one build: JWKS and introspection side by side, idle and then beside
/// a login flood on every connection. The idle pair is the flood's baseline, so that the ratio shows
/// what the logins cost the token checks and nothing else.
async fn flood_turn(t: &Target, length: Duration) -> [Driven; 4] {
    let (jwks_idle, intro_idle) = tokio::join!(
        drive(t, length, 4, jwks),
        drive(t, length, 4, introspection)
    );
    let flood_until = Instant::now() + length;
    let flooders: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let api = t.api.clone();
            tokio::spawn(async move {
                while Instant::now() < flood_until {
                    password_grant(api.clone(), i, i).await;
                }
            })
        })
        .collect();
    // The flood's hashing is the password grant's row; these rows count the CPU left to the rest.
    let besides_hashing = Server::cpu_seconds_besides_hashing;
    let (jwks_flood, intro_flood) = tokio::join!(
        drive_counting(t, length, 4, jwks, besides_hashing),
        drive_counting(t, length, 4, introspection, besides_hashing)
    );
    for f in flooders {
        let _ = f.await;
    }
    [jwks_idle, intro_idle, jwks_flood, intro_flood]
}

async fn run_backend(
    backend: Backend,
    length: Duration,
    machine: &Machine,
    builds: &[Build],
    with_large: bool,
) -> anyhow::Result<(Vec<Row>, Option<LargeTables>)> {
    let http = reqwest::Client::builder()
        // The code flow's redirects are answers to read, not to follow.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut targets = Vec::new();
    // Reversed, so that the first row, which flips them, measures them in the order given.
    for (n, build) in builds.iter().enumerate().rev() {
        targets.push(Target::start(backend, build, n, &http).await?);
    }

    let mut rows = Vec::new();
    let name = backend.name();
    let on = |scenario: &str| wanted(name, scenario);
    let mut record = |target: &Target, scenario, bound, result| {
        rows.push(row(name, target.build, scenario, bound, result, length));
    };

    // Each build's password grant, per server CPU-second: what a browser sign-in is held to.
    let mut password_rates: Vec<(&'static str, f64)> = Vec::new();
    if on("password grant") {
        let turn = in_turn(&mut targets);
        let (limit, results) = bracketed(
            || machine.argon2(),
            side_by_side(&turn, length, CONNECTIONS, password_grant),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            password_rates.push((t.build, result.0 as f64 / result.2));
            record(
                t,
                "password grant",
                Bound::Fraction("argon2id/core", limit, 0.9),
                result,
            );
        }
    }

    // The code flow, on the builds that have it.
    if on("sign-in round (code flow)") {
        let turn = with_code_flow(in_turn(&mut targets));
        let (limit, results) = bracketed(
            || machine.argon2(),
            side_by_side(&turn, length, CONNECTIONS, sign_in_round),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            // 85 % of the password grant's rate, or of its target when that row was not run.
            let bound = match password_rates.iter().find(|(build, _)| *build == t.build) {
                Some(&(_, rate)) => Bound::Fraction("password grant", rate, 0.85),
                None => Bound::Fraction("argon2id/core", limit, 0.9 * 0.85),
            };
            record(t, "sign-in round (code flow)", bound, result);
        }
    }
    if on("authorize, signed in (SSO)") {
        let turn = with_code_flow(in_turn(&mut targets));
        let (limit, results) = bracketed(
            || machine.sign(),
            side_by_side(&turn, length, CONNECTIONS, sso_authorize),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            record(
                t,
                "authorize, signed in (SSO)",
                Bound::Fraction("RS256 sign/core", limit, 0.7),
                result,
            );
        }
    }
    // A redemption with `openid` signs two tokens, access and ID: the signing limit allows half as many
    // of them as of one-token requests. The pair's authorize signs nothing, so the pair is held to it too.
    let two_signatures = |limit: f64| Bound::Fraction("RS256 sign/core / 2", limit / 2.0, 0.7);
    if on("code redemption") {
        let turn = with_code_flow(in_turn(&mut targets));
        // No redemption is quicker than its two signatures, and the server has no more than every core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ceiling = machine.sign() / 2.0 * cores;
        let measured: &[&Target] = &turn;
        let (limit, results) = bracketed(
            || machine.sign(),
            in_turns(measured, length, |i, length| {
                let target = measured[i];
                async move {
                    // Issued before the server's CPU is counted, so the row counts redemptions only.
                    issue_codes(&target.api, length, ceiling).await;
                    [drive(target, length, CONNECTIONS, redemption).await]
                }
            }),
        )
        .await;
        for (t, [result]) in turn.iter().zip(results) {
            record(t, "code redemption", two_signatures(limit), result);
        }
    }
    if on("SSO authorize + code redemption") {
        let turn = with_code_flow(in_turn(&mut targets));
        let (limit, results) = bracketed(
            || machine.sign(),
            side_by_side(&turn, length, CONNECTIONS, sso_and_redemption),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            record(
                t,
                "SSO authorize + code redemption",
                two_signatures(limit),
                result,
            );
        }
    }

    let refresh_target = match backend {
        Backend::Sqlite => 0.65,
        Backend::PostgresRedis => 0.55,
    };
    if on("refresh (rotation)") {
        let turn = in_turn(&mut targets);
        let (limit, results) = bracketed(
            || machine.sign(),
            side_by_side(&turn, length, CONNECTIONS, refresh),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            record(
                t,
                "refresh (rotation)",
                Bound::Fraction("RS256 sign/core", limit, refresh_target),
                result,
            );
        }
    }

    if on("client_credentials") {
        let turn = in_turn(&mut targets);
        let (limit, results) = bracketed(
            || machine.sign(),
            side_by_side(&turn, length, CONNECTIONS, client_credentials),
        )
        .await;
        for (t, result) in turn.iter().zip(results) {
            record(
                t,
                "client_credentials",
                Bound::Fraction("RS256 sign/core", limit, 0.8),
                result,
            );
        }
    }

    if on("introspection") {
        let turn = in_turn(&mut targets);
        let results = side_by_side(&turn, length, CONNECTIONS, introspection).await;
        for (t, result) in turn.iter().zip(results) {
            record(t, "introspection", Bound::Absolute(10_000.0), result);
        }
    }

    if on("GET /users/me") {
        let turn = in_turn(&mut targets);
        let results = side_by_side(&turn, length, CONNECTIONS, users_me).await;
        for (t, result) in turn.iter().zip(results) {
            record(t, "GET /users/me", Bound::Absolute(6_000.0), result);
        }
    }

    if on("JWKS") {
        let turn = in_turn(&mut targets);
        let results = side_by_side(&turn, length, CONNECTIONS, jwks).await;
        for (t, result) in turn.iter().zip(results) {
            record(t, "JWKS", Bound::Absolute(40_000.0), result);
        }
    }
    if on("JWKS, If-None-Match") {
        let turn = in_turn(&mut targets);
        let results = side_by_side(&turn, length, CONNECTIONS, jwks_if_none_match).await;
        for (t, result) in turn.iter().zip(results) {
            record(t, "JWKS, If-None-Match", Bound::Absolute(40_000.0), result);
        }
    }
    if on("JWKS under a login flood") || on("introspection under a login flood") {
        let turn = in_turn(&mut targets);
        let results = in_turns(&turn, length, |i, length| flood_turn(turn[i], length)).await;
        for (t, [jwks_idle, intro_idle, jwks_flood, intro_flood]) in turn.iter().zip(results) {
            // The flood's peak RSS is the largest of its drives'; the idle ones' are lower.
            let flood_rss = jwks_flood.3.max(intro_flood.3);
            record(
                t,
                "JWKS under a login flood",
                Bound::Latency {
                    idle_p99: percentile(&jwks_idle.1, 0.99),
                    at_most: 3.0,
                },
                jwks_flood,
            );
            record(
                t,
                "introspection under a login flood",
                Bound::Latency {
                    idle_p99: percentile(&intro_idle.1, 0.99),
                    at_most: 3.0,
                },
                intro_flood,
            );
            println!(
                "{}: peak RSS under a {CONNECTIONS}-connection login flood {flood_rss:.0} MiB (target <= 120)",
                labelled(name, t.build)
            );
        }
    }

    let large = if with_large && backend == Backend::PostgresRedis && LARGE.iter().any(|s| on(s)) {
        Some(large_tables(&targets[0], length, LARGE.map(on)).await?)
    } else {
        None
    };
    for t in targets {
        t.stop().await?;
    }
    Ok((rows, large))
}

const SECRET: &str = "bench-secret-0123456789-0123456789-abcdef";

impl Api {
    async fn login(&self, user: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", PASSWORD),
            ])
            .send()
            .await
    }
}

// The scenarios' requests, each called as `request(api, i, worker)` by `drive`; true when answered as
// expected.

/// argon2-bound.
async fn password_grant(api: Arc<Api>, i: usize, _: usize) -> bool {
    let user = &api.users[i % api.users.len()];
    api.login(user)
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

/// Presents the newest token of the worker's chain, so every request is a real rotation.
async fn refresh(api: Arc<Api>, _: usize, worker: usize) -> bool {
    let mut rt = api.chains[worker].lock().await;
    let resp = api
        .http
        .post(format!("{}/oauth/token", api.base))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
        ])
        .send()
        .await;
    match resp {
        Ok(r) if r.status() == StatusCode::OK => match r.json::<Value>().await {
            Ok(body) => {
                *rt = body["refresh_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

async fn client_credentials(api: Arc<Api>, _: usize, _: usize) -> bool {
    let req = api
        .http
        .post(format!("{}/oauth/token", api.base))
        .basic_auth("bench-service", Some(SECRET))
        .form(&[("grant_type", "client_credentials")]);
    answered(req, StatusCode::OK).await
}

async fn introspection(api: Arc<Api>, _: usize, _: usize) -> bool {
    let req = api
        .http
        .post(format!("{}/oauth/introspect", api.base))
        .basic_auth("bench-rs", Some(SECRET))
        .form(&[("token", api.access.as_str())]);
    answered(req, StatusCode::OK).await
}

/// The code flow's client, a public one like an SPA's.
const CODE_CLIENT: &str = "bench-app";
const CODE_REDIRECT: &str = "http://127.0.0.1/cb";
/// The PKCE verifier of every authorization request (RFC 7636 appendix B's).
const CODE_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CODE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The authorization request of the code flow's client, with `openid` for an ID token.
fn authorization_request() -> [(&'static str, &'static str); 7] {
    [
        ("response_type", "code"),
        ("client_id", CODE_CLIENT),
        ("redirect_uri", CODE_REDIRECT),
        ("scope", "openid profile"),
        ("state", "bench"),
        ("code_challenge", CODE_CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
}

/// The value of the cookie `name` that `resp` sets.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().find_map(|c| {
        let (pair, _) = c.to_str().ok()?.split_once(';')?;
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| v.to_owned())
    })
}

/// The `code` of a `303` to the client's redirect URI.
fn code_of(resp: &reqwest::Response) -> Option<String> {
    if resp.status() != StatusCode::SEE_OTHER {
        return None;
    }
    let location = url::Url::parse(resp.headers().get("location")?.to_str().ok()?).ok()?;
    location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
}

/// A browser without cookies signs in as `user`: the page (its anti-CSRF cookie), then the form with
/// the password. The code and the sign-in session's cookie.
async fn sign_in(api: &Api, user: &str) -> Option<(String, String)> {
    let authorize = format!("{}/oauth/authorize", api.base);
    let page = api
        .http
        .get(&authorize)
        .query(&authorization_request())
        .send()
        .await
        .ok()?;
    let csrf = set_cookie(&page, "portcullis_csrf")?;
    let mut form = authorization_request().to_vec();
    form.extend([("username", user), ("password", PASSWORD), ("csrf", &csrf)]);
    let signed_in = api
        .http
        .post(&authorize)
        .header("cookie", format!("portcullis_csrf={csrf}"))
        .form(&form)
        .send()
        .await
        .ok()?;
    Some((
        code_of(&signed_in)?,
        set_cookie(&signed_in, "portcullis_session")?,
    ))
}

/// The code redeemed for tokens, an ID token among them.
async fn redeem(api: &Api, code: &str) -> bool {
    let resp = api
        .http
        .post(format!("{}/oauth/token", api.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CODE_CLIENT),
            ("code", code),
            ("redirect_uri", CODE_REDIRECT),
            ("code_verifier", CODE_VERIFIER),
        ])
        .send()
        .await;
    match resp {
        Ok(r) if r.status() == StatusCode::OK => r
            .json::<Value>()
            .await
            .is_ok_and(|body| body["id_token"].is_string()),
        _ => false,
    }
}

/// argon2-bound: a whole browser sign-in, from the page to the tokens.
async fn sign_in_round(api: Arc<Api>, i: usize, _: usize) -> bool {
    let user = &api.users[i % api.users.len()];
    match sign_in(&api, user).await {
        Some((code, _)) => redeem(&api, &code).await,
        None => false,
    }
}

/// A signed-in browser's authorization request: a code at once, no password.
async fn sso_code(api: &Api, worker: usize) -> Option<String> {
    let resp = api
        .http
        .get(format!("{}/oauth/authorize", api.base))
        .query(&authorization_request())
        .header(
            "cookie",
            format!("portcullis_session={}", api.sign_ins[worker]),
        )
        .send()
        .await
        .ok()?;
    code_of(&resp)
}

async fn sso_authorize(api: Arc<Api>, _: usize, worker: usize) -> bool {
    sso_code(&api, worker).await.is_some()
}

/// More codes than can be redeemed in `length` at `ceiling` redemptions a second, each connection
/// issuing its own share in place of what an earlier turn left.
async fn issue_codes(api: &Arc<Api>, length: Duration, ceiling: f64) {
    let per_connection = (ceiling * length.as_secs_f64() / CONNECTIONS as f64).ceil();
    let issuers: Vec<_> = (0..CONNECTIONS)
        .map(|worker| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..per_connection as usize {
                    codes.extend(sso_code(&api, worker).await);
                }
                *api.codes[worker].lock().unwrap() = codes;
            })
        })
        .collect();
    for issuer in issuers {
        let _ = issuer.await;
    }
}

/// One of the codes issued before the row: redeemed, or, when they have run out, nothing for the rest of
/// the row (counted as no request).
async fn redemption(api: Arc<Api>, _: usize, worker: usize) -> bool {
    let code = api.codes[worker].lock().unwrap().pop();
    match code {
        Some(code) => redeem(&api, &code).await,
        None => {
            tokio::time::sleep(Duration::from_millis(10)).await;
            false
        }
    }
}

/// A code, then its redemption.
async fn sso_and_redemption(api: Arc<Api>, _: usize, worker: usize) -> bool {
    match sso_code(&api, worker).await {
        Some(code) => redeem(&api, &code).await,
        None => false,
    }
}

async fn users_me(api: Arc<Api>, _: usize, _: usize) -> bool {
    let req = api
        .http
        .get(format!("{}/users/me", api.base))
        .bearer_auth(&api.access);
    answered(req, StatusCode::OK).await
}

async fn jwks(api: Arc<Api>, _: usize, _: usize) -> bool {
    let req = api.http.get(format!("{}/.well-known/jwks.json", api.base));
    answered(req, StatusCode::OK).await
}

async fn jwks_if_none_match(api: Arc<Api>, _: usize, _: usize) -> bool {
    let req = api
        .http
        .get(format!("{}/.well-known/jwks.json", api.base))
        .header("if-none-match", &api.etag);
    answered(req, StatusCode::NOT_MODIFIED).await
}

/// What the large-tables section seeds: for each of `LARGE_SESSIONS` logins by `LARGE_USERS` users, a
/// chain of `TOKENS_PER_SESSION` refresh tokens (the first from the login, one per refresh).
const LARGE_USERS: u64 = 50_000;
const LARGE_SESSIONS: u64 = 500_000;
const TOKENS_PER_SESSION: u64 = 10;

/// The large-tables section's figures.
struct LargeTables {
    seeded: String,
    /// (scenario, on the tables as the run left them, on the large tables)
    rows: Vec<(&'static str, Measured, Measured)>,
    purge: Option<String>,
}

/// One scenario's figures, measured as the main table's are.
struct Measured {
    tables: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    per_cpu: f64,
    wal_per_request: f64,
}

impl Measured {
    fn new(
        tables: &str,
        (requests, latencies, cpu, _): Driven,
        wal: i64,
        length: Duration,
    ) -> Self {
        Self {
            tables: tables.to_owned(),
            rps: requests as f64 / length.as_secs_f64(),
            p50_ms: percentile(&latencies, 0.5) * 1000.0,
            p99_ms: percentile(&latencies, 0.99) * 1000.0,
            cpu_s: cpu,
            per_cpu: if cpu > 0.0 {
                requests as f64 / cpu
            } else {
                f64::NAN
            },
            wal_per_request: wal as f64 / requests.max(1) as f64,
        }
    }
}

impl LargeTables {
    fn print(&self) {
        println!("\n{}", self.seeded);
        println!(
            "\n| scenario | tables | req/s | p50 ms | p99 ms | server CPU s | req per CPU-s | PostgreSQL WAL KiB per req | large against small |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
        for (scenario, small, large) in &self.rows {
            for (m, against) in [
                (small, String::new()),
                (
                    large,
                    format!(
                        "{:.0} % of the req/s, {:.0} % of the req per CPU-s, {:.1}x the p99",
                        large.rps / small.rps * 100.0,
                        large.per_cpu / small.per_cpu * 100.0,
                        large.p99_ms / small.p99_ms
                    ),
                ),
            ] {
                println!(
                    "| {scenario} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {against} |",
                    m.tables,
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.cpu_s,
                    m.per_cpu,
                    m.wal_per_request / 1024.0
                );
            }
        }
        if let Some(purge) = &self.purge {
            println!("\n{purge}");
        }
    }
}

/// The large-tables section, on PostgreSQL: refresh and introspection measured on the tables as the run
/// left them, then again once they hold what months of logins leave without housekeeping, seeded in
/// SQL; then one housekeeping pass over them by the real `portcullis purge`. `wanted` follows [`LARGE`].
async fn large_tables(
    target: &Target,
    length: Duration,
    wanted: [bool; 3],
) -> anyhow::Result<LargeTables> {
    let db = portcullis::store::connect(&target.db_url, 1)
        .await?
        .writer()
        .clone();
    let measure = async |tables: &str| -> anyhow::Result<_> {
        let mut refreshed = None;
        if wanted[0] {
            refreshed = Some(measured(target, &db, tables, length, refresh).await?);
        }
        let mut introspected = None;
        if wanted[1] {
            introspected = Some(measured(target, &db, tables, length, introspection).await?);
        }
        Ok((refreshed, introspected))
    };
    let small = measure(&row_counts(&db).await?).await?;

    let start = Instant::now();
    let (rebuilt, revocations) = seed_large(&db).await?;
    let seeding = start.elapsed();
    let start = Instant::now();
    db.execute_unprepared("ANALYZE").await?;
    // The seeding's writes are flushed now rather than while the rows below are measured.
    db.execute_unprepared("CHECKPOINT").await?;
    let settling = start.elapsed();
    let seeded = format!(
        "PostgreSQL+Redis, large tables: seeded {LARGE_USERS} users, {LARGE_SESSIONS} sessions, {} refresh tokens and \
         {revocations} revocations in {:.1} s ({:.1} s of it rebuilding the two tables' indexes and constraints), \
         then ANALYZE and CHECKPOINT in {:.1} s",
        LARGE_SESSIONS * TOKENS_PER_SESSION,
        seeding.as_secs_f64(),
        rebuilt.as_secs_f64(),
        settling.as_secs_f64()
    );
    let large = measure(&row_counts(&db).await?).await?;
    db.close().await?;
    let mut rows = Vec::new();
    for (scenario, small, large) in [
        ("refresh (rotation)", small.0, large.0),
        ("introspection", small.1, large.1),
    ] {
        if let (Some(small), Some(large)) = (small, large) {
            rows.push((scenario, small, large));
        }
    }

    let purge = if wanted[2] {
        Some(purge_large(target).await?)
    } else {
        None
    };
    Ok(LargeTables {
        seeded,
        rows,
        purge,
    })
}

/// Drives one scenario as the main table's rows are driven, noting the WAL PostgreSQL wrote meanwhile:
/// with large tables the database's work grows, and the server's own CPU does not show it.
async fn measured<F, Fut>(
    target: &Target,
    db: &sea_orm::DatabaseConnection,
    tables: &str,
    length: Duration,
    request: F,
) -> anyhow::Result<Measured>
where
    F: Fn(Arc<Api>, usize, usize) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let before = wal_bytes(db).await?;
    let result = drive(target, length, CONNECTIONS, request).await;
    let wal = wal_bytes(db).await? - before;
    Ok(Measured::new(tables, result, wal, length))
}

/// The bytes of WAL the whole PostgreSQL cluster has written so far (`pg_stat_wal`, PostgreSQL 14+).
async fn wal_bytes(db: &sea_orm::DatabaseConnection) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT wal_bytes::bigint FROM pg_stat_wal",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("pg_stat_wal is empty"))?;
    Ok(row.try_get_by_index(0)?)
}

/// "N sessions, M refresh tokens", as the tables hold now.
async fn row_counts(db: &sea_orm::DatabaseConnection) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM refresh_tokens)",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no counts"))?;
    let (sessions, tokens): (i64, i64) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
    Ok(format!("{sessions} sessions, {tokens} refresh tokens"))
}

/// Seeds the large tables in one transaction, shaped like the bench's own logins (their client, scope
/// and password hash) and the default lifetimes: a fifth of the sessions live, refreshed over the last
/// weeks; two fifths logged out (a few minutes ago for one in a thousand); three tenths idle for
/// days; a tenth past their absolute lifetime; and a revocation-log entry for each logout. Returns the
/// time the indexes and constraints took to rebuild, and the revocations.
async fn seed_large(db: &sea_orm::DatabaseConnection) -> anyhow::Result<(Duration, u64)> {
    let settings = portcullis::config::Settings::defaults();
    let (idle, absolute, access) = (
        settings.refresh.idle_ttl,
        settings.refresh.absolute_ttl,
        settings.tokens.access_ttl,
    );
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO users (id, username, username_key, email, password_hash, is_active, is_admin,
                            password_changed_at, created_at, updated_at)
         SELECT gen_random_uuid(), 'large-user-' || i, 'large-user-' || i, NULL, b.password_hash, true, false,
                now() - interval '120 days', now() - interval '120 days', now() - interval '120 days'
         FROM generate_series(0, {LARGE_USERS} - 1) i CROSS JOIN (SELECT password_hash FROM users LIMIT 1) b"
    ))
    .await?;
    // Dropped for the inserts and rebuilt by sorting after them: many times faster than inserting into every
    // index row by row.
    txn.execute_unprepared("SET LOCAL maintenance_work_mem = '256MB'")
        .await?;
    let rebuild: Vec<(String, String)> = txn
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            REBUILT,
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    for (drop, _) in &rebuild {
        txn.execute_unprepared(drop).await?;
    }
    txn.execute_unprepared(&format!(
        "WITH shaped AS (
             SELECT i, i % 10 AS kind, i % 1000 = 2 AS just_logged_out,
                    now() - CASE
                        WHEN i % 10 < 2 THEN interval '1 day' + random() * interval '24 days'
                        WHEN i % 10 < 6 THEN interval '1 day' + random() * interval '59 days'
                        WHEN i % 10 < 9 THEN interval '8 days' + random() * interval '52 days'
                        ELSE interval '31 days' + random() * interval '59 days'
                    END AS created_at
             FROM generate_series(0, {LARGE_SESSIONS} - 1) i
         ), used AS (
             SELECT *, CASE
                 WHEN just_logged_out THEN now() - interval '10 minutes'
                 WHEN kind < 2 THEN now() - random() * interval '1 day'
                 WHEN kind < 6 THEN created_at + random() * (now() - created_at - interval '2 minutes')
                 WHEN kind < 9 THEN created_at + random() * interval '1 day'
                 ELSE created_at + interval '29 days' + random() * interval '1 day'
             END AS last_used_at
             FROM shaped
         ), started AS (
             INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, expires_at,
                                   revoked_at, revoked_reason)
             SELECT gen_random_uuid(), u.id, b.client_id, b.scope, s.created_at, s.last_used_at,
                    s.created_at + {absolute} * interval '1 second',
                    CASE WHEN s.kind BETWEEN 2 AND 5 THEN s.last_used_at + interval '1 minute' END,
                    CASE WHEN s.kind BETWEEN 2 AND 5 THEN 'logout' END
             FROM used s
             JOIN users u ON u.username_key = 'large-user-' || s.i % {LARGE_USERS}
             CROSS JOIN (SELECT client_id, scope FROM sessions LIMIT 1) b
             RETURNING id, scope, created_at, last_used_at, expires_at
         )
         INSERT INTO refresh_tokens (id, session_id, token_hash, scope, created_at, expires_at)
         SELECT gen_random_uuid(), s.id, decode(md5(s.id::text || k) || md5(k || s.id::text), 'hex'), s.scope,
                t.issued, least(t.issued + {idle} * interval '1 second', s.expires_at)
         FROM started s
         CROSS JOIN generate_series(0, {TOKENS_PER_SESSION} - 1) k
         CROSS JOIN LATERAL (
             SELECT s.created_at + (s.last_used_at - s.created_at) * k / ({TOKENS_PER_SESSION} - 1) AS issued
         ) t"
    ))
    .await?;
    let rebuilding = Instant::now();
    for (_, create) in rebuild.iter().rev() {
        txn.execute_unprepared(create).await?;
    }
    let rebuilt = rebuilding.elapsed();
    let revocations = txn
        .execute_unprepared(&format!(
            "INSERT INTO revocations (kind, value, not_before, expires_at, created_at)
             SELECT 'sid', s.id::text, NULL, s.revoked_at + {access} * interval '1 second', s.revoked_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.revoked_at IS NOT NULL AND u.username_key LIKE 'large-user-%'
             ORDER BY s.revoked_at"
        ))
        .await?
        .rows_affected();
    txn.commit().await?;
    Ok((rebuilt, revocations))
}

/// The statements that drop, and then recreate as they were, every index and constraint of the sessions
/// and refresh tokens tables (and the foreign keys naming them), in the order they can be dropped.
const REBUILT: &str = "
    WITH t AS (SELECT ARRAY['sessions', 'refresh_tokens']::regclass[] AS tables)
    SELECT drop_sql, create_sql FROM (
        SELECT 0 AS step, format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_sql,
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
                      pg_get_constraintdef(c.oid)) AS create_sql
        FROM pg_constraint c, t
        WHERE contype = 'f' AND (conrelid = ANY(t.tables) OR confrelid = ANY(t.tables))
        UNION ALL
        SELECT 1, format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
               format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
                      pg_get_constraintdef(c.oid))
        FROM pg_constraint c, t
        WHERE contype IN ('p', 'u') AND conrelid = ANY(t.tables)
        UNION ALL
        SELECT 2, format('DROP INDEX %s', indexrelid::regclass), pg_get_indexdef(indexrelid)
        FROM pg_index i, t
        WHERE indrelid = ANY(t.tables) AND NOT EXISTS (
            SELECT 1 FROM pg_constraint c
            WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))
    ) d
    ORDER BY step";

/// Runs one housekeeping pass with the real `portcullis purge` and reports its time and what it removed.
async fn purge_large(target: &Target) -> anyhow::Result<String> {
    let start = Instant::now();
    let out = run_command(&target.binary, &["purge"], &target.db_url, None).await?;
    let took = start.elapsed();
    let removed = out.lines().collect::<Vec<_>>().join(", ");
    Ok(format!(
        "PostgreSQL+Redis, purge of large tables: one `portcullis purge` pass took {:.1} s and removed {removed}",
        took.as_secs_f64()
    ))
}

/// Runs a command of the server binary (`migrate`, `purge`) on the database, as an operator would;
/// returns its standard output.
async fn run_command(
    binary: &Path,
    args: &[&str],
    db_url: &str,
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS__DATABASE__URL", db_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let input = stdin.map(|s| format!("{s}\n"));
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn()?;
        if let Some(input) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "portcullis {}: {}",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A database on this machine is reached without TLS, as a server on the database's own host would reach
/// it, unless the URL names an `sslmode`. Left to sqlx's default (`prefer`), the connection is encrypted
/// (unverified) whenever the server happens to offer TLS, as Debian's PostgreSQL does and a throwaway one
/// started by `tests/with-services.sh` does not, so the same bench would measure two set-ups.
fn same_host_without_tls(url: &mut url::Url) {
    let local = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]") | None
    );
    if local
        && !url
            .query_pairs()
            .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
    {
        url.query_pairs_mut().append_pair("sslmode", "disable");
    }
}

/// `BENCH_SERVER`, else this checkout's release build.
fn server_binary() -> anyhow::Result<PathBuf> {
    let binary = std::env::var_os("BENCH_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/portcullis"),
        PathBuf::from,
    );
    anyhow::ensure!(
        binary.exists(),
        "build the server first: cargo build --release (make bench does)"
    );
    Ok(binary)
}

fn start_server(
    binary: &Path,
    db_url: &str,
    redis: Option<&str>,
    keys: &Path,
    dir: tempfile::TempDir,
) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("PORTCULLIS__DATABASE__URL", db_url)
        .env("PORTCULLIS__KEYS__DIR", keys)
        // The limits are raised for the run: the benchmark measures throughput, not the limiter.
        .env("PORTCULLIS__RATE_LIMIT__LOGIN_PER_IP", "1000000")
        .env("PORTCULLIS__RATE_LIMIT__LOGIN_PER_USER", "1000000")
        .env("PORTCULLIS__RATE_LIMIT__REGISTER_PER_IP", "1000000")
        .env("PORTCULLIS__THROTTLE__FAILURES", "1000000")
        .env("PORTCULLIS__THROTTLE__USER_CEILING", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(redis) = redis {
        // A prefix of its own, since a baseline's server shares the Redis.
        cmd.env("PORTCULLIS__REDIS__URL", redis).env(
            "PORTCULLIS__REDIS__KEY_PREFIX",
            format!("bench:{}:{port}:", std::process::id()),
        );
    }
    // Its own session, as a service has under systemd or in a container. In the load generator's session
    // the kernel's autogroup scheduling weighs the two as one group, which put the hashing threads' turns
    // in the client's way: introspection's p99 beside the login flood was twice as long (4 ms against
    // 2 ms, `wrk`, 2 cores).
    // SAFETY: `setsid` is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
                _dir: dir,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!("the server did not start")
}

/// Runs `connections` workers calling `request(api, i, worker)` for `length`; returns the successful
/// requests, their latencies, the server CPU seconds and the peak RSS meanwhile.
async fn drive<F, Fut>(target: &Target, length: Duration, connections: usize, request: F) -> Driven
where
    F: Fn(Arc<Api>, usize, usize) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    drive_counting(target, length, connections, request, Server::cpu_seconds).await
}

/// [`drive`], counting the server's CPU seconds with `cpu_seconds`.
async fn drive_counting<F, Fut>(
    target: &Target,
    length: Duration,
    connections: usize,
    request: F,
    cpu_seconds: fn(&Server) -> f64,
) -> Driven
where
    F: Fn(Arc<Api>, usize, usize) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let server = &target.server;
    server.reset_peak_rss();
    let cpu_before = cpu_seconds(server);
    let until = Instant::now() + length;
    let workers: Vec<_> = (0..connections)
        .map(|worker| {
            let api = target.api.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while Instant::now() < until {
                    let start = Instant::now();
                    if request(api.clone(), i, worker).await {
                        latencies.push(start.elapsed().as_secs_f64());
                    }
                    i += connections;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap_or_default());
    }
    let cpu = cpu_seconds(server) - cpu_before;
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        latencies.len() as u64,
        latencies,
        cpu,
        server.peak_rss_mib(),
    )
}

/// Sends a scenario's request; it counts when the answer has the expected status.
async fn answered(req: reqwest::RequestBuilder, expected: StatusCode) -> bool {
    req.send().await.is_ok_and(|r| r.status() == expected)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn row(
    backend: &'static str,
    build: &'static str,
    scenario: &'static str,
    bound: Bound,
    (requests, latencies, cpu, rss): Driven,
    length: Duration,
) -> Row {
    Row {
        backend,
        build,
        scenario,
        rps: requests as f64 / length.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5) * 1000.0,
        p99_ms: percentile(&latencies, 0.99) * 1000.0,
        cpu_s: cpu,
        peak_rss_mib: rss,
        requests,
        bound,
    }
}

/// "SQLite", or "SQLite, baseline" beside a baseline.
fn labelled(backend: &str, build: &str) -> String {
    if build.is_empty() {
        backend.to_owned()
    } else {
        format!("{backend}, {build}")
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| backend | scenario | req/s | p50 ms | p99 ms | server CPU s | req per CPU-s | peak RSS MiB | bound by | limit per core | ratio | target | met |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    for r in rows {
        let per_cpu = r.per_cpu();
        let (bound, limit, ratio, target, met) = match r.bound {
            Bound::Fraction(name, limit, fraction) => {
                let ratio = per_cpu / limit;
                (
                    name,
                    format!("{limit:.0}"),
                    format!("{:.0} %", ratio * 100.0),
                    format!(">= {:.0} %", fraction * 100.0),
                    ratio >= fraction,
                )
            }
            Bound::Absolute(target) => (
                "-",
                "-".into(),
                "-".into(),
                format!(">= {target:.0}/CPU-s"),
                per_cpu >= target,
            ),
            Bound::Latency { idle_p99, at_most } => {
                let ratio = r.p99_ms / 1000.0 / idle_p99.max(1e-9);
                (
                    "idle p99",
                    format!("{:.2} ms", idle_p99 * 1000.0),
                    format!("{ratio:.1}x"),
                    format!("p99 <= {at_most:.0}x idle"),
                    ratio <= at_most,
                )
            }
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            labelled(r.backend, r.build),
            r.scenario,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.cpu_s,
            per_cpu,
            r.peak_rss_mib,
            bound,
            limit,
            ratio,
            target,
            if met { "yes" } else { "**no**" }
        );
    }
}

/// Beside a baseline: each row's requests per server CPU-second and p99 on both builds, and the current
/// build's figure as a share of the baseline's.
fn print_comparison(rows: &[Row]) {
    println!(
        "\n| backend | scenario | req per CPU-s, baseline | req per CPU-s, current | current / baseline | p99 ms, baseline | p99 ms, current | current / baseline |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for current in rows.iter().filter(|r| r.build == "current") {
        let Some(baseline) = rows.iter().find(|r| {
            r.build == "baseline" && r.backend == current.backend && r.scenario == current.scenario
        }) else {
            continue;
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} % | {:.2} | {:.2} | {:.1} % |",
            current.backend,
            current.scenario,
            baseline.per_cpu(),
            current.per_cpu(),
            current.per_cpu() / baseline.per_cpu() * 100.0,
            baseline.p99_ms,
            current.p99_ms,
            current.p99_ms / baseline.p99_ms * 100.0
        );
    }
}
