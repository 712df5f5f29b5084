//! The deny list: revoked access tokens (`jti`), revoked sessions (`sid`) and users whose earlier
//! tokens are void (`sub` revoked-before). Redis when `redis.url` is set, so that every instance sees
//! every revocation; in-process otherwise, for a single instance.
//!
//! It is a copy of the revocation log in the database, which is the truth: [`crate::oauth::revocation`]
//! fills it from the log at start, whenever it may have lost entries, and with what other instances and
//! the command line added. Until a copy is complete it does not answer, so that a token is never called
//! live on a partial list: a Redis that restarted empty lacks the `deny:loaded` mark, and an entry that
//! could not be written leaves this instance's copy stale until it is rebuilt.
//!
//! Checking a token is one round trip: one `MGET` of its keys and the mark. Every Redis call is bounded in
//! time; when Redis cannot answer, the caller learns it ([`DenyError::Unavailable`]) and fails closed.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

use super::redis::bounded;
use crate::{error::Error, ports};
use async_trait::async_trait;

use crate::value::{
    claims::AccessClaims,
    revocation::{Entry, Revocation},
};

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

/// The newest log number a Redis deny list holds everything up to. A Redis that restarted empty lacks it;
/// one that failed over to a replica behind the log has a lower number than an instance copied.
const LOADED: &str = "deny:loaded";

pub struct DenyList {
    backend: Backend,
    /// Entries this instance failed to write; the copy is complete while `loaded` has caught up. It starts
    /// one ahead, so that a list never filled counts as incomplete.
    failed: AtomicU64,
    loaded: AtomicU64,
    /// The newest log number this instance copied into the list.
    copied: AtomicI64,
    /// Wakes whoever rebuilds the list when it is found incomplete.
    rebuild: Notify,
    /// The Redis key that stands while this instance rebuilds: gone at the end, Redis lost what the
    /// rebuild wrote.
    guard: String,
}

enum Backend {
    Redis(RedisDenyList),
    Memory(MemoryDenyList),
}

impl DenyList {
    pub fn redis(conn: ConnectionManager, prefix: &str) -> Self {
        Self::with(Backend::Redis(RedisDenyList {
            conn,
            prefix: prefix.to_owned(),
        }))
    }

    pub fn memory() -> Self {
        Self::with(Backend::Memory(MemoryDenyList::default()))
    }

    fn with(backend: Backend) -> Self {
        Self {
            backend,
            failed: AtomicU64::new(1),
            loaded: AtomicU64::new(0),
            copied: AtomicI64::new(0),
            rebuild: Notify::new(),
            guard: format!("deny:rebuilding:{}", uuid::Uuid::new_v4()),
        }
    }

    /// Whether a Redis mark says the list lacks entries this instance copied.
    fn behind(&self, mark: Option<i64>) -> bool {
        mark.is_none_or(|m| m < self.copied.load(Ordering::SeqCst))
    }

    /// Whether the list answers now (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DenyError> {
        match &self.backend {
            Backend::Redis(r) => r.ping().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }
}

#[async_trait]
impl ports::DenyList for DenyList {
    /// Lists revocations until they expire (already expired ones are skipped). A failure marks this
    /// copy incomplete until [`DenyList::mark_copied`] follows a rebuild.
    async fn add(&self, revocations: &[Revocation]) -> Result<(), Error> {
        let now = Utc::now();
        let live: Vec<(String, i64, Duration)> = revocations
            .iter()
            .filter_map(|r| {
                let ttl = (r.expires_at - now).to_std().ok()?;
                let (key, value) = redis_key(&r.entry);
                // A token is live through the whole second of its `exp`: listed a second longer, rounded up.
                let ttl = Duration::from_secs(ttl.as_secs() + 2);
                Some((key, value, ttl))
            })
            .collect();
        let result = match &self.backend {
            Backend::Redis(r) => r.set_all(&live).await,
            Backend::Memory(m) => {
                m.set_all(live);
                Ok(())
            }
        };
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            self.rebuild.notify_one();
        }
        Ok(result?)
    }

    /// Where a rebuild starts: pass it to [`DenyList::mark_copied`] once every live entry is listed,
    /// so that a failure during the rebuild keeps the copy incomplete. On Redis it sets this instance's
    /// guard, which a flush during the rebuild takes with it.
    async fn begin_rebuild(&self) -> Result<u64, Error> {
        let started = self.failed.load(Ordering::SeqCst);
        if let Backend::Redis(r) = &self.backend {
            r.set_guard(&self.guard).await?;
        }
        Ok(started)
    }

    /// Whether the copy may lack entries: a write failed here, or Redis lost what this instance copied
    /// into it (restarted empty, or failed over to a replica that is behind).
    async fn incomplete(&self) -> Result<bool, Error> {
        if self.loaded.load(Ordering::SeqCst) != self.failed.load(Ordering::SeqCst) {
            return Ok(true);
        }
        match &self.backend {
            Backend::Redis(r) => Ok(self.behind(r.mark().await?)),
            Backend::Memory(_) => Ok(false),
        }
    }

    /// Records that the list holds every live entry of the log up to number `upto`; with `rebuilt`, where
    /// the rebuild that did it began ([`DenyList::begin_rebuild`]). On Redis, only if nothing was lost
    /// meanwhile: a catch-up finds the mark still there, a rebuild its guard; else the copy is incomplete
    /// and is rebuilt.
    async fn mark_copied(&self, upto: i64, rebuilt: Option<u64>) -> Result<(), Error> {
        if let Backend::Redis(r) = &self.backend
            && !r
                .raise_mark(upto, rebuilt.map(|_| self.guard.as_str()))
                .await?
        {
            self.rebuild.notify_one();
            return Err(DenyError::Unavailable(
                "Redis lost entries while they were copied; the list is being rebuilt".into(),
            )
            .into());
        }
        self.copied.fetch_max(upto, Ordering::SeqCst);
        // Only failures before the rebuild began are repaired by it.
        if let Some(started) = rebuilt {
            self.loaded.fetch_max(started, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Completes when the list was found incomplete and should be rebuilt now.
    async fn rebuild_wanted(&self) {
        self.rebuild.notified().await
    }

    /// Whether the token was revoked, by any of its `jti`, its session or its subject. An incomplete
    /// copy answers [`DenyError::Unavailable`] rather than guess.
    async fn is_denied(&self, claims: &AccessClaims) -> Result<bool, Error> {
        if self.loaded.load(Ordering::SeqCst) != self.failed.load(Ordering::SeqCst) {
            self.rebuild.notify_one();
            return Err(
                DenyError::Unavailable("revocations are waiting to be listed".into()).into(),
            );
        }
        let mut keys = vec![
            format!("deny:jti:{}", claims.jti),
            format!("user:{}:revoked_before", claims.sub),
        ];
        if let Some(sid) = &claims.sid {
            keys.push(format!("deny:sid:{sid}"));
        }
        let values = match &self.backend {
            Backend::Redis(r) => {
                keys.push(LOADED.to_owned());
                let mut values = r.mget(&keys).await?;
                if self.behind(values.pop().flatten()) {
                    self.rebuild.notify_one();
                    return Err(DenyError::Unavailable(
                        "Redis lost entries; the list is being rebuilt".into(),
                    )
                    .into());
                }
                values
            }
            Backend::Memory(m) => m.mget(&keys),
        };
        let revoked_before = values[1].unwrap_or(i64::MIN);
        Ok(values[0].is_some()
            || claims.iat < revoked_before
            || values.get(2).is_some_and(Option::is_some))
    }
}

struct RedisDenyList {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisDenyList {
    async fn set_all(&self, entries: &[(String, i64, Duration)]) -> Result<(), DenyError> {
        // A rebuild lists every live entry: in pipelines of bounded size, each within the timeout.
        for chunk in entries.chunks(1000) {
            let mut pipe = redis::pipe();
            for (key, value, ttl) in chunk {
                pipe.set_ex(format!("{}{key}", self.prefix), *value, ttl.as_secs())
                    .ignore();
            }
            let mut conn = self.conn.clone();
            bounded(pipe.query_async::<()>(&mut conn))
                .await
                .map_err(DenyError::Unavailable)?;
        }
        Ok(())
    }

    /// Raises the mark to `upto`, never lowers it: instances that copied less must not undo what another
    /// one recorded. A catch-up raises only a mark that is there, a rebuild only while its `guard` is
    /// (and ends it): either gone means Redis was emptied after the entries were read, and a mark set
    /// then would vouch for entries it lacks. `false` when it was not raised for that reason.
    async fn raise_mark(&self, upto: i64, guard: Option<&str>) -> Result<bool, DenyError> {
        let script = redis::Script::new(
            "local v = redis.call('GET', KEYS[1]) \
             if ARGV[2] == '1' then \
               if redis.call('DEL', KEYS[2]) == 0 then return 0 end \
             elseif not v then return 0 end \
             if tonumber(ARGV[1]) > tonumber(v or '-1') then redis.call('SET', KEYS[1], ARGV[1]) end \
             return 1",
        );
        let mut conn = self.conn.clone();
        let mut call = script.key(format!("{}{LOADED}", self.prefix));
        call.key(format!("{}{}", self.prefix, guard.unwrap_or_default()))
            .arg(upto)
            .arg(if guard.is_some() { "1" } else { "0" });
        bounded(call.invoke_async::<i64>(&mut conn))
            .await
            .map(|raised| raised == 1)
            .map_err(DenyError::Unavailable)
    }

    /// Sets `guard` for the length of a rebuild; it expires on its own should this instance stop midway.
    async fn set_guard(&self, guard: &str) -> Result<(), DenyError> {
        let mut conn = self.conn.clone();
        bounded(
            redis::cmd("SET")
                .arg(format!("{}{guard}", self.prefix))
                .arg(1)
                .arg("EX")
                .arg(3600)
                .query_async::<()>(&mut conn),
        )
        .await
        .map_err(DenyError::Unavailable)
    }

    async fn mark(&self) -> Result<Option<i64>, DenyError> {
        let mut conn = self.conn.clone();
        bounded(
            redis::cmd("GET")
                .arg(format!("{}{LOADED}", self.prefix))
                .query_async::<Option<i64>>(&mut conn),
        )
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
struct MemoryDenyList {
    entries: Mutex<HashMap<String, (i64, Instant)>>,
}

impl MemoryDenyList {
    fn set_all(&self, new: Vec<(String, i64, Duration)>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("deny list lock");
        for (key, value, ttl) in new {
            // Expired entries are dropped as new ones arrive, so the map stays as small as the live set.
            if entries.len() > 1024 && entries.len().is_power_of_two() {
                entries.retain(|_, (_, until)| *until > now);
            }
            entries.insert(key, (value, now + ttl));
        }
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

/// The Redis key of an entry and the value stored under it.
fn redis_key(entry: &Entry) -> (String, i64) {
    match entry {
        Entry::Jti(jti) => (format!("deny:jti:{jti}"), 1),
        Entry::Session(sid) => (format!("deny:sid:{sid}"), 1),
        Entry::SubjectBefore { sub, not_before } => {
            (format!("user:{sub}:revoked_before"), *not_before)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::DenyList as _;

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

    fn revocation(entry: Entry, ttl: chrono::Duration) -> Revocation {
        Revocation {
            entry,
            expires_at: Utc::now() + ttl,
        }
    }

    /// An in-process list filled from an empty log.
    async fn filled() -> DenyList {
        let list = DenyList::memory();
        let started = list.begin_rebuild().await.unwrap();
        list.mark_copied(0, Some(started)).await.unwrap();
        list
    }

    #[tokio::test]
    async fn a_list_never_filled_does_not_answer() {
        let list = DenyList::memory();
        assert!(list.incomplete().await.unwrap());
        assert!(list.is_denied(&claims("j", "u", None, 0)).await.is_err());
        let list = filled().await;
        assert!(!list.incomplete().await.unwrap());
        assert!(!list.is_denied(&claims("j", "u", None, 0)).await.unwrap());
    }

    #[tokio::test]
    async fn each_kind_of_entry_denies_exactly_its_tokens() {
        let list = filled().await;
        let minute = chrono::Duration::seconds(60);
        list.add(&[
            revocation(Entry::Jti("j1".into()), minute),
            revocation(Entry::Session("s1".into()), minute),
            revocation(
                Entry::SubjectBefore {
                    sub: "u1".into(),
                    not_before: 100,
                },
                minute,
            ),
        ])
        .await
        .unwrap();

        let denied = |c: AccessClaims| {
            let list = &list;
            async move { list.is_denied(&c).await.unwrap() }
        };
        assert!(denied(claims("j1", "u9", None, 500)).await);
        assert!(denied(claims("j2", "u9", Some("s1"), 500)).await);
        assert!(denied(claims("j2", "u1", None, 99)).await);
        assert!(!denied(claims("j2", "u1", None, 100)).await);
        assert!(!denied(claims("j2", "u9", Some("s2"), 500)).await);
    }

    #[tokio::test]
    async fn an_entry_already_expired_is_not_listed() {
        let list = filled().await;
        list.add(&[revocation(
            Entry::Jti("j1".into()),
            chrono::Duration::seconds(-1),
        )])
        .await
        .unwrap();
        assert!(!list.is_denied(&claims("j1", "u", None, 0)).await.unwrap());
    }

    #[test]
    fn an_entry_survives_the_feed_s_columns() {
        for entry in [
            Entry::Jti("j".into()),
            Entry::Session("s".into()),
            Entry::SubjectBefore {
                sub: "u".into(),
                not_before: 7,
            },
        ] {
            let (kind, value, not_before) = entry.parts();
            assert_eq!(
                Entry::from_parts(kind, value.to_owned(), not_before),
                Some(entry.clone())
            );
        }
        assert_eq!(Entry::from_parts("sub", "u".into(), None), None);
    }
}
