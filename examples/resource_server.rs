//! A resource server that trusts Portcullis knowing nothing but its issuer URL.
//!
//! It discovers the JWKS and the revocation feed from the metadata, caches the JWKS as long as its
//! `Cache-Control` allows, refetches it once when a token names an unknown `kid` (and no more often than
//! `MIN_REFETCH_SECS`, so forged `kid`s cannot make it hammer the server), verifies RS256 tokens with
//! `iss`, `aud`, `exp` and a required `scope`, and polls the revocation feed so that a revoked token is
//! refused within seconds.
//!
//! ```sh
//! ISSUER=http://127.0.0.1:8080 CLIENT_ID=orders-api CLIENT_SECRET=… cargo run --example resource_server
//! curl -s http://127.0.0.1:9090/protected -H "authorization: Bearer $TOKEN"
//! ```
//!
//! Environment: `ISSUER` (required), `AUDIENCE` (`portcullis`), `REQUIRED_SCOPE` (`profile`), `BIND`
//! (`127.0.0.1:9090`), `CLIENT_ID`/`CLIENT_SECRET` (a confidential client, for the feed; without them no
//! feed is read), `FEED_INTERVAL_MS` (`2000`), `MIN_REFETCH_SECS` (`10`).

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poem::{
    EndpointExt, Request, Response, Route, Server, get, handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::{Data, Json},
};
use serde::Deserialize;
use serde_json::{Value, json};

struct Config {
    issuer: String,
    audience: String,
    scope: String,
    client: Option<(String, String)>,
    feed_interval: Duration,
    min_refetch: Duration,
}

/// The cached JWKS.
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fresh_until: Instant,
    last_fetch: Option<Instant>,
}

/// What the feed has revoked, each until its tokens have expired.
#[derive(Default)]
struct Revoked {
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// subject → (tokens issued before this are void, until)
    sub: HashMap<String, (i64, i64)>,
    cursor: Option<String>,
}

struct ResourceServer {
    config: Config,
    http: reqwest::Client,
    jwks_uri: String,
    feed_uri: String,
    keys: RwLock<Keys>,
    revoked: RwLock<Revoked>,
    jwks_fetches: AtomicU64,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
    revocation_feed_endpoint: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    jti: String,
    scope: String,
    sid: Option<String>,
}

impl ResourceServer {
    async fn discover(config: Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/.well-known/oauth-authorization-server", config.issuer);
        let meta: Metadata = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            meta.issuer == config.issuer,
            "the metadata names another issuer"
        );
        Ok(Self {
            http,
            jwks_uri: meta.jwks_uri,
            feed_uri: meta.revocation_feed_endpoint,
            keys: RwLock::new(Keys {
                by_kid: HashMap::new(),
                fresh_until: Instant::now(),
                last_fetch: None,
            }),
            revoked: RwLock::default(),
            jwks_fetches: AtomicU64::new(0),
            config,
        })
    }

    async fn fetch_jwks(&self) -> anyhow::Result<()> {
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await?
            .error_for_status()?;
        // Honour the server's Cache-Control: max-age.
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|d| d.trim().strip_prefix("max-age=")?.parse().ok())
            })
            .unwrap_or(60);
        let jwks: Value = resp.json().await?;
        let mut by_kid = HashMap::new();
        for key in jwks["keys"].as_array().into_iter().flatten() {
            if let (Some(kid), Some(n), Some(e)) =
                (key["kid"].as_str(), key["n"].as_str(), key["e"].as_str())
                && let Ok(decoding) = DecodingKey::from_rsa_components(n, e)
            {
                by_kid.insert(kid.to_owned(), decoding);
            }
        }
        let mut keys = self.keys.write().unwrap();
        keys.by_kid = by_kid;
        keys.fresh_until = Instant::now() + Duration::from_secs(max_age);
        keys.last_fetch = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let (stale, known, may_refetch) = {
            let keys = self.keys.read().unwrap();
            (
                keys.fresh_until <= Instant::now(),
                keys.by_kid.get(kid).cloned(),
                keys.last_fetch
                    .is_none_or(|t| t.elapsed() >= self.config.min_refetch),
            )
        };
        if let Some(key) = known.filter(|_| !stale) {
            return Some(key);
        }
        // A stale cache is refreshed; an unknown kid earns one refetch per interval at most.
        if (stale || may_refetch) && self.fetch_jwks().await.is_err() {
            return None;
        }
        self.keys.read().unwrap().by_kid.get(kid).cloned()
    }

    async fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed")?;
        if header.alg != Algorithm::RS256 || header.typ.as_deref() != Some("at+jwt") {
            return Err("not an RS256 access token");
        }
        let kid = header.kid.ok_or("no kid")?;
        let key = self.key(&kid).await.ok_or("unknown kid")?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| "invalid")?
            .claims;
        if !claims.scope.split(' ').any(|s| s == self.config.scope) {
            return Err("insufficient scope");
        }
        let revoked = self.revoked.read().unwrap();
        let by_sub = revoked
            .sub
            .get(&claims.sub)
            .is_some_and(|&(nb, _)| claims.iat < nb);
        let by_sid = claims
            .sid
            .as_ref()
            .is_some_and(|sid| revoked.sid.contains_key(sid));
        if revoked.jti.contains_key(&claims.jti) || by_sid || by_sub {
            return Err("revoked");
        }
        Ok(claims)
    }

    async fn poll_feed(self: Arc<Self>) {
        let Some((id, secret)) = self.config.client.clone() else {
            return;
        };
        loop {
            let cursor = self.revoked.read().unwrap().cursor.clone();
            let mut request = self.http.get(&self.feed_uri).basic_auth(&id, Some(&secret));
            if let Some(cursor) = &cursor {
                request = request.query(&[("since", cursor)]);
            }
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    if let Ok(feed) = resp.json::<Value>().await {
                        self.absorb(&feed);
                    }
                }
                Ok(resp) => eprintln!("revocation feed: {}", resp.status()),
                Err(e) => eprintln!("revocation feed: {e}"),
            }
            tokio::time::sleep(self.config.feed_interval).await;
        }
    }

    fn absorb(&self, feed: &Value) {
        let now = chrono_now();
        let mut revoked = self.revoked.write().unwrap();
        for entry in feed["entries"].as_array().into_iter().flatten() {
            let (Some(kind), Some(value), Some(until)) = (
                entry["kind"].as_str(),
                entry["value"].as_str(),
                entry["expires_at"].as_i64(),
            ) else {
                continue;
            };
            match kind {
                "jti" => drop(revoked.jti.insert(value.to_owned(), until)),
                "sid" => drop(revoked.sid.insert(value.to_owned(), until)),
                "sub" => {
                    let nb = entry["not_before"].as_i64().unwrap_or(i64::MAX);
                    revoked.sub.insert(value.to_owned(), (nb, until));
                }
                _ => {}
            }
        }
        revoked.cursor = feed["cursor"].as_str().map(str::to_owned);
        // Forget what can no longer matter.
        revoked.jti.retain(|_, &mut until| until > now);
        revoked.sid.retain(|_, &mut until| until > now);
        revoked.sub.retain(|_, &mut (_, until)| until > now);
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[handler]
async fn protected(req: &Request, rs: Data<&Arc<ResourceServer>>) -> Response {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return refuse("missing token");
    };
    match rs.verify(token).await {
        Ok(claims) => Json(json!({ "sub": claims.sub, "scope": claims.scope })).into_response(),
        Err(why) => refuse(why),
    }
}

fn refuse(why: &str) -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("www-authenticate", r#"Bearer error="invalid_token""#)
        .content_type("application/json")
        .body(json!({ "error": "invalid_token", "error_description": why }).to_string())
}

/// How often this server fetched the JWKS: to see that forged kids do not make it hammer the issuer.
#[handler]
async fn stats(rs: Data<&Arc<ResourceServer>>) -> Json<Value> {
    Json(json!({ "jwks_fetches": rs.jwks_fetches.load(Ordering::Relaxed) }))
}

use poem::IntoResponse;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let config = Config {
        issuer: std::env::var("ISSUER")
            .map_err(|_| anyhow::anyhow!("set ISSUER"))?
            .trim_end_matches('/')
            .to_owned(),
        audience: env("AUDIENCE", "portcullis"),
        scope: env("REQUIRED_SCOPE", "profile"),
        client: std::env::var("CLIENT_ID")
            .ok()
            .zip(std::env::var("CLIENT_SECRET").ok()),
        feed_interval: Duration::from_millis(env("FEED_INTERVAL_MS", "2000").parse()?),
        min_refetch: Duration::from_secs(env("MIN_REFETCH_SECS", "10").parse()?),
    };
    let rs = Arc::new(ResourceServer::discover(config).await?);
    rs.fetch_jwks().await?;
    tokio::spawn(rs.clone().poll_feed());
    let acceptor = TcpListener::bind(env("BIND", "127.0.0.1:9090"))
        .into_acceptor()
        .await?;
    // Printed for whoever started us with port 0.
    println!("listening on {}", acceptor.local_addr()[0]);
    let app = Route::new()
        .at("/protected", get(protected))
        .at("/stats", get(stats))
        .data(rs);
    Server::new_with_acceptor(acceptor).run(app).await?;
    Ok(())
}
