//! Layered, typed settings: the defaults compiled in from `config/default.toml`, then that file on disk
//! (so an operator may edit it), then the file named by `PORTCULLIS_CONFIG`, then `PORTCULLIS__SECTION__KEY`
//! environment variables. Everything is checked here, at start-up; a bad value names its key.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use url::Url;

/// The defaults, compiled in so that the binary runs anywhere without its source tree.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub keys: KeySettings,
    pub tokens: TokenSettings,
    pub refresh: RefreshSettings,
    pub rate_limit: RateLimitSettings,
    pub throttle: ThrottleSettings,
    pub registration: RegistrationSettings,
    pub password: PasswordSettings,
    pub clients: ClientSettings,
    pub maintenance: MaintenanceSettings,
    pub login: LoginSettings,
    pub mail: MailSettings,
    pub password_reset: LinkSettings,
    pub email_verification: LinkSettings,
    pub log: LogSettings,
}

/// Where messages go: SMTP when `smtp_url` is set, else `.eml` files in `dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    #[serde(default)]
    pub smtp_url: Option<String>,
    pub dir: PathBuf,
    pub from: String,
}

/// A mailed link's lifetime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Seconds the link works.
    pub ttl: u64,
}

/// Browser sign-in at the authorization endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Seconds a browser sign-in session lasts.
    pub session_ttl: u64,
    /// Seconds an authorization code may be redeemed.
    pub code_ttl: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSettings {
    /// Seconds between housekeeping passes; `0` turns them off.
    pub purge_interval: u64,
}

impl MaintenanceSettings {
    pub fn purge_period(&self) -> Option<Duration> {
        (self.purge_interval > 0).then(|| Duration::from_secs(self.purge_interval))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub issuer: Url,
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds a client has to send a request's head, and then its body.
    pub read_timeout: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    pub idle_timeout: u64,
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub cors_origins: Vec<String>,
}

impl ServerSettings {
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
}

// The URL may carry a password: never print it.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Option<String>,
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub dir: PathBuf,
    pub jwks_max_age: u64,
    pub publish_ahead: Option<u64>,
    pub rescan_interval: u64,
}

impl KeySettings {
    /// How long a new key is published before it may sign: by default, as long as a JWKS may be cached.
    pub fn publish_ahead(&self) -> Duration {
        Duration::from_secs(self.publish_ahead.unwrap_or(self.jwks_max_age))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub access_ttl: u64,
    pub audience: String,
    /// Seconds an ID token lives; `access_ttl` when unset.
    #[serde(default)]
    pub id_token_ttl: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshSettings {
    pub idle_ttl: u64,
    pub absolute_ttl: u64,
    pub reuse_grace: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub login_per_ip: NonZeroU32,
    pub login_per_user: NonZeroU32,
    pub register_per_ip: NonZeroU32,
    /// Password-reset and verification requests per minute per client address.
    pub mail_per_ip: NonZeroU32,
    /// Messages per hour about one account.
    pub mail_per_account: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSettings {
    pub failures: u32,
    pub base_delay: u64,
    pub max_delay: u64,
    pub user_ceiling: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    pub enabled: bool,
    /// Refuse sign-in to a user whose email is not verified.
    pub require_verified_email: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    pub min_length: usize,
    /// Hashes computed at once; 0 means one per core.
    pub hash_concurrency: usize,
    /// How long a request waits for a hashing slot before it gets `503` + `Retry-After`.
    pub hash_queue_wait_ms: u64,
}

impl PasswordSettings {
    /// How many hashing threads `hash_concurrency` asks for.
    pub fn hashing_threads(&self) -> usize {
        match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub default_client_id: String,
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub default_scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// The full layering of the contract, reading the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        let on_disk = PathBuf::from("config/default.toml");
        if on_disk.is_file() {
            figment = figment.merge(Toml::file(on_disk));
        }
        if let Some(path) = std::env::var_os("PORTCULLIS_CONFIG") {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "PORTCULLIS_CONFIG names {}, which is not a readable file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("PORTCULLIS__").split("__")))
    }

    /// The compiled-in defaults alone, ignoring files and environment: the base tests start from.
    pub fn defaults() -> Self {
        Self::from_figment(Figment::from(Toml::string(DEFAULTS)))
            .expect("the compiled-in defaults are valid")
    }

    /// Extracts and checks settings from any figment (tests layer their own values this way).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|errors| {
            // Name each bad key as the contract spells it (`section.key`, lowercase, whichever source set
            // it) and say where the value came from; keep every error, not only the first.
            let described = errors.into_iter().map(|e| {
                let key = e.path.join(".").to_lowercase();
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| format!(" (from {})", m.name))
                    .unwrap_or_default();
                format!("{key}: {}{source}", e.kind)
            });
            ConfigError(described.collect::<Vec<_>>().join("; "))
        })?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if !matches!(self.server.issuer.scheme(), "http" | "https") {
            return bad("server.issuer", "must be an http or https URL");
        }
        if self.server.read_timeout == 0 {
            return bad("server.read_timeout", "must be at least 1 second");
        }
        if self.server.idle_timeout == 0 {
            return bad("server.idle_timeout", "must be at least 1 second");
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            return bad("database.url", "must be a sqlite: or postgres:// URL");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if let Some(url) = &self.redis.url
            && redis::Client::open(url.as_str()).is_err()
        {
            return bad("redis.url", "is not a valid redis:// URL");
        }
        if self.tokens.access_ttl == 0 {
            return bad("tokens.access_ttl", "must be at least 1 second");
        }
        // Longer is a mistake, and a time past chrono's or the clock's range could be neither signed,
        // stored nor waited for.
        const CENTURY: u64 = 100 * 365 * 24 * 60 * 60;
        for (key, seconds) in [
            ("server.read_timeout", self.server.read_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("keys.jwks_max_age", self.keys.jwks_max_age),
            ("keys.publish_ahead", self.keys.publish_ahead.unwrap_or(0)),
            ("keys.rescan_interval", self.keys.rescan_interval),
            ("tokens.access_ttl", self.tokens.access_ttl),
            ("tokens.id_token_ttl", self.tokens.id_token_ttl.unwrap_or(0)),
            ("login.session_ttl", self.login.session_ttl),
            ("login.code_ttl", self.login.code_ttl),
            ("refresh.idle_ttl", self.refresh.idle_ttl),
            ("refresh.absolute_ttl", self.refresh.absolute_ttl),
            ("password_reset.ttl", self.password_reset.ttl),
            ("email_verification.ttl", self.email_verification.ttl),
            ("refresh.reuse_grace", self.refresh.reuse_grace),
            ("throttle.base_delay", self.throttle.base_delay),
            ("throttle.max_delay", self.throttle.max_delay),
            (
                "password.hash_queue_wait_ms",
                self.password.hash_queue_wait_ms / 1000,
            ),
            (
                "maintenance.purge_interval",
                self.maintenance.purge_interval,
            ),
        ] {
            if seconds > CENTURY {
                return bad(key, "must be at most 100 years");
            }
        }
        if self.tokens.id_token_ttl == Some(0) {
            return bad("tokens.id_token_ttl", "must be at least 1 second");
        }
        if self.login.session_ttl == 0 {
            return bad("login.session_ttl", "must be at least 1 second");
        }
        if self.login.code_ttl == 0 {
            return bad("login.code_ttl", "must be at least 1 second");
        }
        if self.tokens.audience.trim().is_empty() {
            return bad("tokens.audience", "must not be empty");
        }
        if self.keys.jwks_max_age == 0 {
            return bad("keys.jwks_max_age", "must be at least 1 second");
        }
        if self.keys.rescan_interval == 0 {
            return bad("keys.rescan_interval", "must be at least 1 second");
        }
        if self.refresh.idle_ttl == 0 {
            return bad("refresh.idle_ttl", "must be at least 1 second");
        }
        if self.refresh.absolute_ttl < self.refresh.idle_ttl {
            return bad(
                "refresh.absolute_ttl",
                "must not be shorter than refresh.idle_ttl",
            );
        }
        if self.throttle.base_delay == 0 || self.throttle.max_delay < self.throttle.base_delay {
            return bad(
                "throttle.max_delay",
                "must be at least throttle.base_delay, which must be at least 1",
            );
        }
        if !(1..=crate::password::MAX_LENGTH).contains(&self.password.min_length) {
            return bad("password.min_length", "must be between 1 and 128");
        }
        if crate::value::scope::Scope::parse(&self.clients.default_scopes.join(" ")).is_err() {
            return bad(
                "clients.default_scopes",
                "must be valid RFC 6749 scope tokens",
            );
        }
        if self.clients.default_client_id.is_empty() || self.clients.default_client_id.len() > 128 {
            return bad("clients.default_client_id", "must be 1 to 128 characters");
        }
        Ok(())
    }

    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.tokens.access_ttl)
    }

    pub fn id_token_ttl(&self) -> Duration {
        Duration::from_secs(self.tokens.id_token_ttl.unwrap_or(self.tokens.access_ttl))
    }

    /// How long after a key file is written it may sign: `keys.publish_ahead`, counted from the rescan at
    /// which the last instance can have published it, a `keys.rescan_interval` after the file appeared;
    /// `0` still means at once, as the operator asked.
    pub fn key_signs_after(&self) -> Duration {
        match self.keys.publish_ahead() {
            Duration::ZERO => Duration::ZERO,
            ahead => ahead + Duration::from_secs(self.keys.rescan_interval),
        }
    }

    /// How long a key stays published after its successor may sign: an instance goes on signing with it
    /// until its next rescan, and a token so signed lives as long as the longer of the access and ID
    /// token lifetimes.
    pub fn key_outlives_successor(&self) -> Duration {
        self.access_ttl().max(self.id_token_ttl()) + Duration::from_secs(self.keys.rescan_interval)
    }

    pub fn lifetimes(&self) -> crate::oauth::grant::Lifetimes {
        crate::oauth::grant::Lifetimes {
            session: Duration::from_secs(self.refresh.absolute_ttl),
            refresh_idle: Duration::from_secs(self.refresh.idle_ttl),
            reuse_grace: Duration::from_secs(self.refresh.reuse_grace),
        }
    }

    /// The issuer as it appears in `iss`: the configured URL without a trailing slash.
    pub fn issuer(&self) -> String {
        self.server.issuer.as_str().trim_end_matches('/').to_owned()
    }
}

/// Accepts a TOML list or, as environment variables can only carry strings, one comma-separated string.
fn list_or_comma_separated<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(de)? {
        Raw::List(items) => items,
        Raw::One(s) => s.split(',').map(str::to_owned).collect(),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| parse_item::<T>(s).map_err(serde::de::Error::custom))
        .collect()
}

fn parse_item<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    // A bare address is a one-address range.
    s.parse::<T>()
        .or_else(|first| {
            let widened = match s.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => format!("{s}/32"),
                Ok(std::net::IpAddr::V6(_)) => format!("{s}/128"),
                Err(_) => return Err(first),
            };
            widened.parse::<T>().map_err(|_| first)
        })
        .map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
// figment::Jail's closures return its own large error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(key: &str, value: impl serde::Serialize) -> Result<Settings, ConfigError> {
        Settings::from_figment(
            Figment::from(Toml::string(DEFAULTS)).merge(Serialized::default(key, value)),
        )
    }

    #[test]
    fn the_defaults_are_the_contract_defaults() {
        let s = Settings::defaults();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.issuer.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(s.server.read_timeout, 10);
        assert_eq!(s.server.idle_timeout, 60);
        assert_eq!(s.database.url, "sqlite://data/portcullis.db?mode=rwc");
        assert!(s.redis.url.is_none());
        assert_eq!(s.keys.publish_ahead(), Duration::from_secs(300));
        // Published on every instance for publish_ahead before signing; kept as long as any token it
        // signed may live, rescans included.
        assert_eq!(s.key_signs_after(), Duration::from_secs(300 + 30));
        assert_eq!(s.key_outlives_successor(), Duration::from_secs(900 + 30));
        let at_once = with("keys.publish_ahead", 0).unwrap();
        assert_eq!(at_once.key_signs_after(), Duration::ZERO);
        let long_id_tokens = with("tokens.id_token_ttl", 3600).unwrap();
        assert_eq!(
            long_id_tokens.key_outlives_successor(),
            Duration::from_secs(3600 + 30)
        );
        assert_eq!(s.tokens.access_ttl, 900);
        assert_eq!(s.refresh.idle_ttl, 604_800);
        assert_eq!(s.refresh.absolute_ttl, 2_592_000);
        assert_eq!(s.rate_limit.login_per_ip.get(), 30);
        assert_eq!(s.throttle.max_delay, 900);
        assert_eq!(s.password.min_length, 8);
        assert_eq!(s.mail.smtp_url, None);
        assert_eq!(s.mail.dir, PathBuf::from("data/mail"));
        assert_eq!(s.mail.from, "Portcullis <no-reply@localhost>");
        assert_eq!(s.password_reset.ttl, 1800);
        assert_eq!(s.email_verification.ttl, 172_800);
        assert_eq!(s.rate_limit.mail_per_ip.get(), 10);
        assert_eq!(s.rate_limit.mail_per_account, 3);
        assert!(!s.registration.require_verified_email);
    }

    #[test]
    fn the_production_example_is_a_valid_override() {
        let example = include_str!("../config/production.example.toml");
        let s = Settings::from_figment(
            Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(example)),
        )
        .unwrap();
        assert_eq!(
            s.mail.smtp_url.as_deref(),
            Some("smtp://mailer.internal:587")
        );
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = with("tokens.access_ttl", "soon").unwrap_err().to_string();
        assert!(err.contains("tokens.access_ttl"), "{err}");
        let err = with("server.bind", "nowhere").unwrap_err().to_string();
        assert!(err.contains("server.bind"), "{err}");
        let err = with("tokens.access_ttl", 0).unwrap_err().to_string();
        assert!(err.contains("tokens.access_ttl"), "{err}");
        for key in ["server.read_timeout", "server.idle_timeout"] {
            let err = with(key, 0).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for key in [
            "server.read_timeout",
            "server.idle_timeout",
            "keys.jwks_max_age",
            "keys.publish_ahead",
            "keys.rescan_interval",
            "tokens.access_ttl",
            "login.session_ttl",
            "refresh.absolute_ttl",
            "refresh.reuse_grace",
            "throttle.max_delay",
            "password.hash_queue_wait_ms",
            "maintenance.purge_interval",
        ] {
            let err = with(key, u64::MAX / 2).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("100 years"), "{err}");
        }
        let err = with("password.min_length", 500).unwrap_err().to_string();
        assert!(err.contains("password.min_length"), "{err}");
        // Removed keys are refused like any unknown key, rather than silently ignored.
        let err = with("password.hash_cgroup", "/sys/fs/cgroup/cpu/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hash_cgroup"), "{err}");
        let err = with("server.trusted_proxies", "10.0.0.0/8,banana")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("banana"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_rather_than_ignored() {
        let err = with("tokens.acess_ttl", 60).unwrap_err().to_string();
        assert!(err.contains("acess_ttl"), "{err}");
    }

    #[test]
    fn trusted_proxies_accept_a_comma_separated_string_and_bare_addresses() {
        let s = with("server.trusted_proxies", "10.0.0.0/8, 192.168.1.7,::1").unwrap();
        let got: Vec<String> = s
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
    }

    #[test]
    fn environment_variables_override_with_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PORTCULLIS__TOKENS__ACCESS_TTL", "60");
            jail.set_env(
                "PORTCULLIS__SERVER__TRUSTED_PROXIES",
                "10.1.0.0/16,10.2.0.1",
            );
            let s = Settings::load().map_err(|e| e.to_string())?;
            assert_eq!(s.tokens.access_ttl, 60);
            assert_eq!(s.server.trusted_proxies.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn the_file_named_by_portcullis_config_overrides_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("prod.toml", "[tokens]\naudience = \"api\"\n")?;
            jail.set_env("PORTCULLIS_CONFIG", "prod.toml");
            let s = Settings::load().map_err(|e| e.to_string())?;
            assert_eq!(s.tokens.audience, "api");
            Ok(())
        });
    }
}
