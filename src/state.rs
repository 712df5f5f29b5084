//! The shared services, built once, the same way by `main` and by the tests.

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;

use crate::{
    config::Settings,
    keys::KeyStore,
    metrics::Metrics,
    oauth::{issuer::Issuer, refresh::RefreshTokens, revocation::Revoker, verifier::Verifier},
    password::Hasher,
    ratelimit::Limits,
    store::{
        clients::ClientStore, deny_list::DenyList, revocation_feed::RevocationFeed,
        sessions::SessionStore, users::UserStore,
    },
    throttle::Throttle,
    value::scope::Scope,
};

pub struct AppState {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub db: DatabaseConnection,
    pub keys: Arc<KeyStore>,
    pub hasher: Hasher,
    pub issuer: Issuer,
    pub verifier: Verifier,
    pub users: UserStore,
    pub clients: ClientStore,
    pub sessions: SessionStore,
    pub deny_list: Arc<DenyList>,
    pub revoker: Revoker,
    pub feed: RevocationFeed,
    pub refresh_tokens: RefreshTokens,
    pub limits: Limits,
    /// The RFC 8414 document, serialised once.
    pub metadata: bytes::Bytes,
    /// The `Cache-Control` of the JWKS and the metadata, rendered once.
    pub discovery_cache_control: http::HeaderValue,
    pub throttle: Throttle,
}

impl AppState {
    /// Connects, migrates, loads the keys and makes sure the default client exists.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let db = crate::store::connect(&settings.database.url, settings.database.max_connections)
            .await?;
        crate::store::migrate(&db).await?;
        let keys = Arc::new(KeyStore::load(
            &settings.keys.dir,
            settings.keys.publish_ahead(),
            settings.access_ttl(),
        )?);
        let clients = ClientStore::new(db.clone());
        let default_scopes = Scope::parse(&settings.clients.default_scopes.join(" "))
            .map_err(|_| anyhow::anyhow!("clients.default_scopes is invalid"))?;
        clients
            .ensure_default(&settings.clients.default_client_id, &default_scopes)
            .await?;
        let redis = settings
            .redis
            .url
            .as_deref()
            .map(crate::store::redis::connect)
            .transpose()?;
        if let Some(conn) = &redis {
            crate::store::redis::warn_if_evicting(conn).await;
        }
        let prefix = &settings.redis.key_prefix;
        let deny_list = Arc::new(match &redis {
            Some(conn) => DenyList::redis(conn.clone(), prefix),
            None => DenyList::memory(),
        });
        let throttle = match &redis {
            Some(conn) => Throttle::redis(settings.throttle.clone(), conn.clone(), prefix),
            None => Throttle::memory(settings.throttle.clone()),
        };
        let sessions = SessionStore::new(db.clone());
        let feed = RevocationFeed::new(db.clone());
        let users = UserStore::new(db.clone());
        let revoker = Revoker::new(
            sessions.clone(),
            users.clone(),
            clients.clone(),
            feed.clone(),
            deny_list.clone(),
            settings.access_ttl(),
            metrics.clone(),
        );
        // The deny list holds every live revocation before the first request. A Redis that cannot be
        // reached now leaves it incomplete: token checks answer `503` until it is rebuilt.
        if let Err(e) = revoker.sync().await {
            tracing::warn!(error = %e, "the deny list could not be filled from the revocation log yet");
        }
        let successor_key = crate::store::secrets::load_or_create(&db, "refresh_successor").await?;
        let issuer_url = settings.issuer();
        Ok(Self {
            hasher: Hasher::new(
                settings.password.hashing_threads(),
                Duration::from_millis(settings.password.hash_queue_wait_ms),
                metrics.clone(),
            )?,
            limits: Limits::new(&settings.rate_limit, metrics.clone()),
            metadata: serde_json::to_vec(&crate::oauth::metadata::document(&settings))?.into(),
            discovery_cache_control: format!("public, max-age={}", settings.keys.jwks_max_age)
                .try_into()?,
            throttle,
            issuer: Issuer::new(
                keys.clone(),
                issuer_url.clone(),
                settings.tokens.audience.clone(),
                settings.access_ttl(),
            ),
            verifier: Verifier::new(
                keys.clone(),
                deny_list.clone(),
                feed.clone(),
                metrics.clone(),
                &issuer_url,
                &settings.tokens.audience,
            ),
            users,
            revoker,
            feed,
            refresh_tokens: RefreshTokens::new(successor_key),
            sessions,
            deny_list,
            clients,
            keys,
            db,
            settings: Arc::new(settings),
            metrics,
        })
    }
}
