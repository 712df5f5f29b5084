//! The wiring: the stores of one database plugged into the domain's ports, built the same way by the
//! server, the command line and the tests. Only this module and `store` name the concrete stores.

use std::{sync::Arc, time::Duration};

use crate::{
    accounts::Accounts,
    config::Settings,
    keys::KeyStore,
    mail::Mailer,
    metrics::Metrics,
    oauth::{
        authorize::Authorizer,
        grant::Grants,
        issuer::Issuer,
        login::LoginGuard,
        logout::SignOut,
        metadata::Metadata,
        refresh::RefreshTokens,
        revocation::{Revoker, RevokerPorts},
        tokens::Tokens,
        verifier::Verifier,
    },
    password::Hasher,
    ports::{self, Clock},
    ratelimit::{Limits, MailLimit},
    recovery::Recovery,
    store::{
        Db, clients::ClientStore, deny_list::DenyList, links::LinkStore,
        revocation_feed::RevocationFeed, sessions::SessionStore, sign_in::SignInStore,
        users::UserStore,
    },
    throttle::Throttle,
    value::scope::Scope,
};

/// The server's shared services.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// For readiness and housekeeping, which are about the database itself.
    pub db: Db,
    pub keys: Arc<KeyStore>,
    pub grants: Grants,
    pub authorizer: Authorizer,
    pub sign_out: SignOut,
    pub recovery: Arc<Recovery>,
    pub accounts: Accounts,
    pub verifier: Arc<Verifier>,
    pub tokens: Tokens,
    pub revoker: Arc<Revoker>,
    pub users: Arc<dyn ports::Users>,
    pub sessions: Arc<dyn ports::Sessions>,
    pub clients: Arc<dyn ports::Clients>,
    pub feed: Arc<dyn ports::RevocationLog>,
    pub deny_list: Arc<DenyList>,
    pub login: Arc<LoginGuard>,
    pub limits: Limits,
    pub mail_limit: MailLimit,
    pub clock: Arc<dyn Clock>,
    /// The RFC 8414 document, serialised once.
    pub metadata: bytes::Bytes,
    /// The `Cache-Control` of the JWKS and the metadata, rendered once.
    pub discovery_cache_control: http::HeaderValue,
}

/// The stores of one database, as the domain's ports, and the revoker over them.
pub struct Stores {
    /// Redis, when `redis.url` is set: the deny list's and the login throttle's.
    pub redis: Option<redis::aio::ConnectionManager>,
    pub users: Arc<UserStore>,
    pub sessions: Arc<SessionStore>,
    pub clients: Arc<ClientStore>,
    pub feed: Arc<RevocationFeed>,
    pub sign_in: Arc<SignInStore>,
    pub links: Arc<LinkStore>,
    pub deny_list: Arc<DenyList>,
    pub revoker: Arc<Revoker>,
}

impl Stores {
    /// The deny list is Redis's when `redis.url` is set, else this process's own.
    pub fn new(
        db: &Db,
        settings: &Settings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let redis = settings
            .redis
            .url
            .as_deref()
            .map(crate::store::redis::connect)
            .transpose()?;
        let deny_list = Arc::new(match &redis {
            Some(conn) => DenyList::redis(conn.clone(), &settings.redis.key_prefix),
            None => DenyList::memory(),
        });
        let users = Arc::new(UserStore::new(db.clone()));
        let sessions = Arc::new(SessionStore::new(db.clone()));
        let clients = Arc::new(ClientStore::new(db.clone()));
        let feed = Arc::new(RevocationFeed::new(db.clone()));
        let sign_in = Arc::new(SignInStore::new(db.clone()));
        let links = Arc::new(LinkStore::new(db.clone()));
        let revoker = Arc::new(Revoker::new(
            RevokerPorts {
                sessions: sessions.clone(),
                users: users.clone(),
                clients: clients.clone(),
                log: feed.clone(),
                deny: deny_list.clone(),
                clock,
            },
            settings.access_ttl(),
            metrics,
        ));
        Ok(Self {
            redis,
            users,
            sessions,
            clients,
            feed,
            sign_in,
            links,
            deny_list,
            revoker,
        })
    }

    /// The account flows over these stores.
    pub fn accounts(
        &self,
        settings: &Settings,
        hasher: Arc<Hasher>,
        login: Arc<LoginGuard>,
        clock: Arc<dyn Clock>,
    ) -> Accounts {
        Accounts {
            users: self.users.clone(),
            clients: self.clients.clone(),
            hasher,
            login,
            revoker: self.revoker.clone(),
            clock,
            min_password_length: settings.password.min_length,
        }
    }
}

impl AppState {
    /// Connects, migrates, loads the keys and makes sure the default client exists.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let db = crate::store::connect(&settings.database.url, settings.database.max_connections)
            .await?;
        crate::store::migrate(&db).await?;
        let keys = Arc::new(KeyStore::load(
            &settings.keys.dir,
            settings.key_signs_after(),
            settings.key_outlives_successor(),
        )?);
        let stores = Stores::new(&db, &settings, metrics.clone(), clock.clone())?;
        let default_scopes = Scope::parse(&settings.clients.default_scopes.join(" "))
            .map_err(|_| anyhow::anyhow!("clients.default_scopes is invalid"))?;
        stores
            .clients
            .ensure_default(&settings.clients.default_client_id, &default_scopes)
            .await?;
        let throttle = match &stores.redis {
            Some(conn) => {
                crate::store::redis::warn_if_evicting(conn).await;
                Throttle::redis(
                    settings.throttle.clone(),
                    conn.clone(),
                    &settings.redis.key_prefix,
                )
            }
            None => Throttle::memory(settings.throttle.clone()),
        };
        // The deny list holds every live revocation before the first request. A Redis that cannot be
        // reached now leaves it incomplete: token checks answer `503` until it is rebuilt.
        if let Err(e) = stores.revoker.sync().await {
            tracing::warn!(error = %e, "the deny list could not be filled from the revocation log yet");
        }
        let successor_key =
            crate::store::secrets::load_or_create(db.writer(), "refresh_successor").await?;
        let issuer_url = settings.issuer();
        let hasher = Arc::new(Hasher::new(
            settings.password.hashing_threads(),
            Duration::from_millis(settings.password.hash_queue_wait_ms),
            metrics.clone(),
        )?);
        let login = Arc::new(LoginGuard::new(
            throttle,
            metrics.clone(),
            stores.users.clone(),
            hasher.clone(),
            settings.registration.require_verified_email,
        ));
        let issuer = Arc::new(Issuer::new(
            keys.clone(),
            clock.clone(),
            issuer_url.clone(),
            settings.tokens.audience.clone(),
            settings.access_ttl(),
            settings.id_token_ttl(),
        ));
        let grants = Grants {
            sessions: stores.sessions.clone(),
            codes: stores.sign_in.clone(),
            login: login.clone(),
            issuer,
            refresh_tokens: RefreshTokens::new(successor_key),
            revoker: stores.revoker.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            lifetimes: settings.lifetimes(),
        };
        let metadata = Metadata::new(&issuer_url, &settings.clients.default_scopes);
        let verifier = Arc::new(Verifier::new(
            keys.clone(),
            stores.deny_list.clone(),
            stores.feed.clone(),
            metrics.clone(),
            clock.clone(),
            &issuer_url,
            &settings.tokens.audience,
        ));
        let authorizer = Authorizer {
            clients: stores.clients.clone(),
            codes: stores.sign_in.clone(),
            sign_ins: stores.sign_in.clone(),
            clock: clock.clone(),
            issuer: issuer_url.clone(),
            code_ttl: Duration::from_secs(settings.login.code_ttl),
            sign_in_ttl: Duration::from_secs(settings.login.session_ttl),
        };
        let site = settings
            .server
            .issuer
            .host_str()
            .unwrap_or("Portcullis")
            .to_owned();
        let recovery = Arc::new(Recovery {
            users: stores.users.clone(),
            links: stores.links.clone(),
            outbox: Arc::new(Mailer::start(&settings.mail, &site, metrics.clone())?),
            revoker: stores.revoker.clone(),
            hasher: hasher.clone(),
            clock: clock.clone(),
            issuer: issuer_url.clone(),
            reset_ttl: Duration::from_secs(settings.password_reset.ttl),
            verification_ttl: Duration::from_secs(settings.email_verification.ttl),
            per_account: settings.rate_limit.mail_per_account,
            min_password_length: settings.password.min_length,
            metrics: metrics.clone(),
        });
        let sign_out = SignOut {
            clients: stores.clients.clone(),
            verifier: verifier.clone(),
            revoker: stores.revoker.clone(),
        };
        Ok(Self {
            authorizer,
            sign_out,
            recovery,
            accounts: stores.accounts(&settings, hasher, login.clone(), clock.clone()),
            tokens: Tokens {
                verifier: verifier.clone(),
                revoker: stores.revoker.clone(),
                sessions: stores.sessions.clone(),
                users: stores.users.clone(),
            },
            verifier,
            grants,
            limits: Limits::new(&settings.rate_limit, metrics.clone()),
            mail_limit: MailLimit::new(
                settings.rate_limit.mail_per_ip,
                stores
                    .redis
                    .clone()
                    .map(|conn| (conn, settings.redis.key_prefix.as_str())),
                metrics.clone(),
            ),
            metadata: serde_json::to_vec(&metadata)?.into(),
            discovery_cache_control: format!("public, max-age={}", settings.keys.jwks_max_age)
                .try_into()?,
            login,
            revoker: stores.revoker.clone(),
            users: stores.users.clone(),
            sessions: stores.sessions.clone(),
            clients: stores.clients.clone(),
            feed: stores.feed.clone(),
            deny_list: stores.deny_list.clone(),
            clock,
            keys,
            db,
            settings: Arc::new(settings),
            metrics,
        })
    }
}
