//! The deny list: revoked access tokens (`jti`), revoked sessions (`sid`) and users whose earlier
//! tokens are void (`sub` revoked-before). Redis when `redis.url` is set, so that every instance sees
//! every revocation; in-process otherwise, for a single instance.
//!
//! Checking a token is one round trip: one `MGET` of its three keys. Every Redis call is bounded in
//! time; when Redis cannot answer, the caller learns it ([`DenyError::Unavailable`]) and fails closed.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};

use super::redis::bounded;

use crate::oauth::claims::AccessClaims;

#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    #[error("the deny list is unavailable: {0}")]
    Unavailable(String),
}

impl From<DenyError> for crate::error::Error {
    fn from(e: DenyError) -> Self {
        tracing::warn!(error = %e, "deny list");
        crate::error::Error::Unavailable {
            what: "the deny list",
            retry_after: 1,
        }
    }
}

/// One revocation, as the keys record it.
pub enum Entry<'a> {
    /// One access token, until it expires.
    Jti(&'a str),
    /// Every access token of a session.
    Session(&'a str),
    /// Every token of a subject issued before `not_before` (seconds since the epoch).
    SubjectBefore { sub: &'a str, not_before: i64 },
}

pub enum DenyList {
    Redis(RedisDenyList),
    Memory(MemoryDenyList),
}

impl DenyList {
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Self {
        Self::Redis(RedisDenyList {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    pub fn memory() -> Self {
        Self::Memory(MemoryDenyList::default())
    }

    /// Records a revocation that must outlive every token it concerns: `ttl` is the longest such a
    /// token may still live.
    pub async fn add(&self, entry: Entry<'_>, ttl: Duration) -> Result<(), DenyError> {
        let ttl = ttl.max(Duration::from_secs(1));
        let (key, value) = match entry {
            Entry::Jti(jti) => (format!("deny:jti:{jti}"), 1),
            Entry::Session(sid) => (format!("deny:sid:{sid}"), 1),
            Entry::SubjectBefore { sub, not_before } => {
                (format!("user:{sub}:revoked_before"), not_before)
            }
        };
        match self {
            Self::Redis(r) => r.set(&key, value, ttl).await,
            Self::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
        }
    }

    /// Whether the token was revoked, by any of its `jti`, its session or its subject.
    pub async fn is_denied(&self, claims: &AccessClaims) -> Result<bool, DenyError> {
        let mut keys = vec![
            format!("deny:jti:{}", claims.jti),
            format!("user:{}:revoked_before", claims.sub),
        ];
        if let Some(sid) = &claims.sid {
            keys.push(format!("deny:sid:{sid}"));
        }
        let values = match self {
            Self::Redis(r) => r.mget(&keys).await?,
            Self::Memory(m) => m.mget(&keys),
        };
        let revoked_before = values[1].unwrap_or(i64::MIN);
        Ok(values[0].is_some()
            || claims.iat < revoked_before
            || values.get(2).is_some_and(Option::is_some))
    }

    /// Whether the list answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DenyError> {
        match self {
            Self::Redis(r) => r.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

pub struct RedisDenyList {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisDenyList {
    async fn set(&self, key: &str, value: i64, ttl: Duration) -> Result<(), DenyError> {
        let mut conn = self.conn.clone();
        let key = format!("{}{key}", self.prefix);
        bounded(conn.set_ex::<_, _, ()>(key, value, ttl.as_secs()))
            .await
            .map_err(DenyError::Unavailable)
    }

    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<i64>>, DenyError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.prefix)).collect();
        // MGET of one key answers a bare value; always ask as a command for a list.
        bounded(redis::cmd("MGET").arg(&keys).query_async(&mut conn))
            .await
            .map_err(DenyError::Unavailable)
    }

    async fn ping(&self) -> Result<(), DenyError> {
        let mut conn = self.conn.clone();
        bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
            .map_err(DenyError::Unavailable)
    }
}

/// The in-process list: a map with expiry, for a single instance without Redis.
#[derive(Default)]
pub struct MemoryDenyList {
    entries: Mutex<HashMap<String, (i64, Instant)>>,
}

impl MemoryDenyList {
    fn set(&self, key: String, value: i64, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("deny list lock");
        // Expired entries are dropped as new ones arrive, so the map stays as small as the live set.
        if entries.len() > 1024 && entries.len().is_power_of_two() {
            entries.retain(|_, (_, until)| *until > now);
        }
        entries.insert(key, (value, now + ttl));
    }

    fn mget(&self, keys: &[String]) -> Vec<Option<i64>> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("deny list lock");
        keys.iter()
            .map(|k| {
                entries
                    .get(k)
                    .filter(|(_, until)| *until > now)
                    .map(|(v, _)| *v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, sub: &str, sid: Option<&str>, iat: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: sub.into(),
            aud: "a".into(),
            exp: iat + 60,
            iat,
            nbf: iat,
            jti: jti.into(),
            client_id: "c".into(),
            scope: String::new(),
            sid: sid.map(str::to_owned),
            username: None,
        }
    }

    #[tokio::test]
    async fn each_kind_of_entry_denies_exactly_its_tokens() {
        let list = DenyList::memory();
        let ttl = Duration::from_secs(60);
        list.add(Entry::Jti("j1"), ttl).await.unwrap();
        list.add(Entry::Session("s1"), ttl).await.unwrap();
        list.add(
            Entry::SubjectBefore {
                sub: "u1",
                not_before: 100,
            },
            ttl,
        )
        .await
        .unwrap();

        assert!(
            list.is_denied(&claims("j1", "u9", None, 500))
                .await
                .unwrap()
        );
        assert!(
            list.is_denied(&claims("j2", "u9", Some("s1"), 500))
                .await
                .unwrap()
        );
        assert!(list.is_denied(&claims("j2", "u1", None, 99)).await.unwrap());
        assert!(
            !list
                .is_denied(&claims("j2", "u1", None, 100))
                .await
                .unwrap()
        );
        assert!(
            !list
                .is_denied(&claims("j2", "u9", Some("s2"), 500))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn memory_entries_expire() {
        let list = DenyList::memory();
        list.add(Entry::Jti("j1"), Duration::from_millis(1))
            .await
            .unwrap();
        // The minimum lifetime is one second.
        assert!(list.is_denied(&claims("j1", "u", None, 0)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!list.is_denied(&claims("j1", "u", None, 0)).await.unwrap());
    }
}
