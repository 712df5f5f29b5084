//! The command line of the contract: `serve`, `migrate`, `keys`, `users`, `clients`, `purge`.

use std::{io::Read, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use migration::{Migrator, MigratorTrait};

use crate::{
    accounts::{Accounts, ClientRequest, ClientSecret, NewAccount},
    config::Settings,
    error::Error,
    metrics::Metrics,
    oauth::login::LoginGuard,
    password::Hasher,
    ports::{Clock, SystemClock},
    startup::{App, shutdown_signal},
    state::Stores,
    store,
    throttle::Throttle,
    value::{grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope},
};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An OAuth 2.0 authorization server"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate if needed, load the keys, and listen.
    Serve,
    /// Apply, roll back or list the schema migrations.
    Migrate {
        #[arg(value_enum, default_value = "up")]
        direction: Direction,
        /// How many migrations `down` rolls back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// One housekeeping pass now: delete ended sessions, spent refresh tokens and revocations that
    /// can no longer matter. Prints `TABLE: N` for each table.
    Purge,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Direction {
    Up,
    Down,
    Status,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new RSA signing key into keys.dir (PKCS#8 PEM, mode 0600).
    Generate {
        /// 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Add the next signing key: published at once, signing after keys.publish_ahead.
    Rotate {
        /// 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Each key's kid, age and state (next, signing, retiring, expired).
    List,
    /// Delete the expired keys: those whose every token has expired.
    Prune,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user; the password is read from standard input (one trailing newline is dropped).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: they can no longer log in.
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// List users.
    List,
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Create a client. A confidential client's secret is printed once, or read from stdin.
    Create {
        #[arg(long)]
        id: String,
        /// A public client: no secret (for example a browser or mobile app).
        #[arg(long)]
        public: bool,
        /// Comma-separated grant types: password, refresh_token, client_credentials,
        /// authorization_code.
        #[arg(long, value_delimiter = ',', default_value = "password,refresh_token")]
        grants: Vec<String>,
        /// Space-separated scopes the client may be granted.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Read the secret from standard input instead of generating one.
        #[arg(long, conflicts_with = "public")]
        secret_stdin: bool,
        /// Where the authorization code may be sent (repeat for several); the authorization_code
        /// grant needs at least one.
        #[arg(long = "redirect-uri", value_name = "URI", action = clap::ArgAction::Append)]
        redirect_uris: Vec<String>,
        /// Where the browser may be sent after signing out (repeat for several).
        #[arg(long = "post-logout-redirect-uri", value_name = "URI", action = clap::ArgAction::Append)]
        post_logout_redirect_uris: Vec<String>,
    },
    /// List clients.
    List,
    /// Delete a client and its sessions.
    Delete { id: String },
}

impl Cli {
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        match self.command {
            Command::Serve => serve(settings).await,
            Command::Migrate { direction, steps } => migrate(&settings, direction, steps).await,
            Command::Keys(cmd) => keys(&settings, cmd),
            Command::Users(cmd) => users(&settings, cmd).await,
            Command::Clients(cmd) => clients(&settings, cmd).await,
            Command::Purge => purge(&settings).await,
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = App::build(settings).await?;
    tracing::info!(addr = %app.addr, "listening");
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

fn keys(settings: &Settings, cmd: KeysCommand) -> anyhow::Result<()> {
    let dir = &settings.keys.dir;
    let (ahead, ttl) = (
        settings.key_signs_after(),
        settings.key_outlives_successor(),
    );
    match cmd {
        KeysCommand::Generate { bits } => {
            let (path, kid) = crate::keys::generate(dir, bits)?;
            println!("generated {} (kid {kid})", path.display());
        }
        KeysCommand::Rotate { bits } => {
            let (path, kid) = crate::keys::generate(dir, bits)?;
            let signs_at = chrono::Utc::now() + chrono::Duration::from_std(ahead)?;
            println!("generated {} (kid {kid})", path.display());
            println!(
                "published in the JWKS at each instance's next rescan (within keys.rescan_interval, or at once \
                 on SIGHUP); it signs from {} on",
                signs_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        KeysCommand::List => {
            println!("kid\tcreated_at\tage\tstate\tfile");
            let now = chrono::Utc::now();
            let inventory = crate::keys::inventory(dir, ahead, ttl)?;
            for file in inventory.refused {
                eprintln!("refused {file}");
            }
            for (key, state) in inventory.keys {
                let age = (now - key.created_at).num_seconds().max(0);
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.kid,
                    key.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    human_age(age),
                    state.as_str(),
                    key.path.display()
                );
            }
        }
        KeysCommand::Prune => {
            let (removed, refused) = crate::keys::prune(dir, ahead, ttl)?;
            for file in refused {
                eprintln!("refused {file}");
            }
            for key in &removed {
                println!("removed {} (kid {})", key.path.display(), key.kid);
            }
            if removed.is_empty() {
                println!("nothing to prune: every key may still verify a live token");
            }
        }
    }
    Ok(())
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn migrate(settings: &Settings, direction: Direction, steps: u32) -> anyhow::Result<()> {
    let db = store::connect(&settings.database.url, 1).await?;
    let db = db.writer();
    match direction {
        Direction::Up => Migrator::up(db, None).await?,
        Direction::Down => Migrator::down(db, Some(steps)).await?,
        Direction::Status => {}
    }
    for m in Migrator::get_migration_with_status(db).await? {
        println!("{:?}\t{}", m.status(), m.name());
    }
    Ok(())
}

/// Connects and brings the schema up to date, for the commands that read or write rows.
async fn database(settings: &Settings) -> anyhow::Result<store::Db> {
    let db = store::connect(&settings.database.url, 2).await?;
    store::migrate(&db).await?;
    Ok(db)
}

async fn users(settings: &Settings, cmd: UsersCommand) -> anyhow::Result<()> {
    let accounts = accounts(settings).await?;
    match cmd {
        UsersCommand::Create {
            username,
            email,
            admin,
        } => {
            let password = read_stdin_line().context("reading the password from stdin")?;
            let new = NewAccount {
                username: &username,
                password,
                email: email.as_deref(),
                // The operator vouches for the address: nothing is sent.
                email_verified: true,
                is_admin: admin,
            };
            let user = accounts
                .register(new)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}\t{}", user.id, user.username);
        }
        UsersCommand::Disable { username } => set_active(&accounts, &username, false).await?,
        UsersCommand::Enable { username } => set_active(&accounts, &username, true).await?,
        UsersCommand::List => {
            println!("id\tusername\temail\tactive\tadmin\tcreated_at");
            for u in accounts.users.list(None, 0).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.username,
                    u.email.unwrap_or_default(),
                    u.is_active,
                    u.is_admin,
                    u.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(())
}

/// Disables (revoking every session and access token of the user) or enables a user.
async fn set_active(accounts: &Accounts, username: &str, active: bool) -> anyhow::Result<()> {
    let user = accounts
        .users
        .find_by_username(username)
        .await?
        .with_context(|| format!("no user named {username}"))?;
    accounts
        .set_active(user.id, active)
        .await
        .map_err(|e| anyhow::anyhow!("changing the user's state: {e}"))?;
    println!(
        "{} {}",
        user.username,
        if active { "enabled" } else { "disabled" }
    );
    Ok(())
}

async fn purge(settings: &Settings) -> anyhow::Result<()> {
    let db = database(settings).await?;
    let purged = store::housekeeping::purge(&db, chrono::Utc::now(), settings.access_ttl()).await?;
    for (table, rows) in purged.tables() {
        println!("{table}: {rows}");
    }
    Ok(())
}

/// The account flows, for the commands that read or change accounts and clients. Their revocations go to
/// the database, whence every running server lists them within keys.rescan_interval; with Redis they are
/// listed there at once.
async fn accounts(settings: &Settings) -> anyhow::Result<Accounts> {
    let db = database(settings).await?;
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let stores = Stores::new(&db, settings, metrics.clone(), clock.clone())?;
    let hasher = Arc::new(Hasher::new(1, Duration::from_secs(60), metrics.clone())?);
    // One process, one attempt: nothing to throttle, so in-process counters do.
    let login = Arc::new(LoginGuard::new(
        Throttle::memory(settings.throttle.clone()),
        metrics,
        stores.users.clone(),
        hasher.clone(),
        settings.registration.require_verified_email,
    ));
    Ok(stores.accounts(settings, hasher, login, clock))
}

async fn clients(settings: &Settings, cmd: ClientsCommand) -> anyhow::Result<()> {
    let accounts = accounts(settings).await?;
    match cmd {
        ClientsCommand::Create {
            id,
            public,
            grants,
            scopes,
            secret_stdin,
            redirect_uris,
            post_logout_redirect_uris,
        } => {
            let grant_types = grants
                .iter()
                .map(|g| {
                    GrantType::parse(g.trim()).with_context(|| format!("unknown grant type {g}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let scopes = Scope::parse(&scopes)
                .map_err(|_| anyhow::anyhow!("--scopes is not a valid scope list"))?;
            let secret = match (public, secret_stdin) {
                (true, _) => ClientSecret::Public,
                (false, true) => {
                    ClientSecret::Given(read_stdin_line().context("reading the secret from stdin")?)
                }
                (false, false) => ClientSecret::Generate,
            };
            let request = ClientRequest {
                id: &id,
                grant_types,
                scopes: &scopes,
                secret,
                redirect_uris,
                post_logout_redirect_uris,
            };
            let (client, shown) = accounts.create_client(request).await.map_err(|e| match e {
                Error::Conflict(_) => anyhow::anyhow!("a client {id} exists already"),
                Error::Policy { description, .. } => anyhow::anyhow!("{description}"),
                other => anyhow::anyhow!("creating the client: {other}"),
            })?;
            match shown {
                // Shown once: only its hash is stored.
                Some(secret) => println!("client_id: {}\nclient_secret: {secret}", client.id),
                None => println!("client_id: {}", client.id),
            }
        }
        ClientsCommand::List => {
            println!(
                "client_id\ttype\tgrant_types\tscopes\tcreated_at\tredirect_uris\tpost_logout_redirect_uris"
            );
            let uris = |list: &[RedirectUri]| {
                list.iter()
                    .map(RedirectUri::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for c in accounts.clients.list().await? {
                let grant_types: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    c.id,
                    if c.is_public {
                        "public"
                    } else {
                        "confidential"
                    },
                    grant_types.join(" "),
                    c.scopes,
                    c.created_at.to_rfc3339(),
                    uris(&c.redirect_uris),
                    uris(&c.post_logout_redirect_uris)
                );
            }
        }
        ClientsCommand::Delete { id } => {
            let deleted = accounts
                .delete_client(&id)
                .await
                .map_err(|e| anyhow::anyhow!("deleting the client: {e}"))?;
            if !deleted {
                bail!("no client {id}");
            }
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// One line from standard input, without its trailing newline.
fn read_stdin_line() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let line = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input);
    if line.is_empty() {
        bail!("standard input is empty");
    }
    Ok(line.to_owned())
}
