//! Passwords: the registration policy, and argon2id hashing on a bounded blocking pool.
//!
//! Hashing costs about 20 ms of CPU and 19 MiB of memory, so it never runs on the async threads and
//! never more than one per core at once; a caller that cannot get a slot soon is told to come back
//! (`503` + `Retry-After`) instead of queueing without end.

use std::{collections::HashSet, sync::Arc, sync::LazyLock, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use tokio::sync::Semaphore;

use crate::{error::Error, metrics::Metrics, telemetry::spawn_blocking_in_span};

/// The longest password accepted anywhere; longer input is refused before it reaches argon2.
pub const MAX_LENGTH: usize = 128;

/// The 30,000 most common passwords of the xato corpus, as zxcvbn ships them (MIT licence), most
/// frequent first.
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Checks a new password against the policy of the contract; the error names the rule that failed.
pub fn check_policy(password: &str, username: &str, min_length: usize) -> Result<(), Error> {
    let rule = |code: &'static str, description: String| {
        Err(Error::Policy {
            code,
            description: description.into(),
        })
    };
    let length = password.chars().count();
    if length < min_length {
        return rule(
            "password_too_short",
            format!("the password must have at least {min_length} characters"),
        );
    }
    if length > MAX_LENGTH {
        return rule(
            "password_too_long",
            format!("the password must have at most {MAX_LENGTH} characters"),
        );
    }
    let lowered = password.to_lowercase();
    if COMMON.contains(lowered.as_str()) {
        return rule(
            "password_too_common",
            "the password is one of the most common passwords".into(),
        );
    }
    if lowered == username.to_lowercase() {
        return rule(
            "password_is_username",
            "the password must not be the username".into(),
        );
    }
    Ok(())
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Match { needs_rehash: bool },
    Mismatch,
}

/// argon2id with the OWASP parameters (m=19456 KiB, t=2, p=1), on the blocking pool.
pub struct Hasher {
    params: Params,
    slots: Arc<Semaphore>,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    /// A hash of nothing anyone knows: unknown users are verified against it, so that they cost what
    /// a wrong password costs (same answer, same time).
    dummy: String,
}

impl Hasher {
    /// `slots` hashes run at once (one per core is right); a caller waits at most `max_wait` for one.
    pub fn new(slots: usize, max_wait: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let params = Params::default();
        let dummy = argon2(&params)
            .hash_password(b"portcullis dummy password for unknown users")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            max_wait,
            metrics,
            dummy,
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let params = self.params.clone();
        self.run(move || {
            argon2(&params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(anyhow::anyhow!("argon2 hash: {e}")))
        })
        .await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no user, so that
    /// both cost the same.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, Error> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy.clone());
        let want = self.params.clone();
        let verified = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return Verified::Mismatch;
                };
                // Verification takes its parameters from the stored hash, so old hashes still verify.
                match argon2(&want).verify_password(password.as_bytes(), &parsed) {
                    Ok(()) => Verified::Match {
                        needs_rehash: needs_rehash(&parsed, &want),
                    },
                    Err(_) => Verified::Mismatch,
                }
            })
            .await?;
        Ok(if known { verified } else { Verified::Mismatch })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let queued = QueueSlot::enter(&self.metrics);
        let started = std::time::Instant::now();
        let permit = tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await;
        self.metrics
            .hash_wait
            .observe(started.elapsed().as_secs_f64());
        let permit = permit
            .map_err(|_| {
                Metrics::count(&self.metrics.rejections, "password.hash_queue_wait_ms");
                Error::Unavailable {
                    what: "password hashing",
                    retry_after: 1,
                }
            })?
            .expect("the hashing semaphore is never closed");
        let out = spawn_blocking_in_span(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("hashing task failed: {e}")));
        drop(queued);
        out
    }
}

/// Counts a hash in the queue gauge for as long as it waits or runs, however the wait ends.
struct QueueSlot<'a>(&'a Metrics);

impl<'a> QueueSlot<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.hash_queue.inc();
        Self(metrics)
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.hash_queue.dec();
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn needs_rehash(stored: &PasswordHash, want: &Params) -> bool {
    if stored.algorithm != Algorithm::Argon2id.ident()
        || stored.version != Some(Version::V0x13.into())
    {
        return true;
    }
    match Params::try_from(stored) {
        Ok(p) => {
            p.m_cost() != want.m_cost()
                || p.t_cost() != want.t_cost()
                || p.p_cost() != want.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), Error>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn the_policy_names_the_rule_that_failed() {
        assert_eq!(
            code(check_policy("short", "alice", 8)),
            "password_too_short"
        );
        assert_eq!(
            code(check_policy(&"x".repeat(129), "alice", 8)),
            "password_too_long"
        );
        assert_eq!(
            code(check_policy("Password1", "alice", 8)),
            "password_too_common"
        );
        assert_eq!(
            code(check_policy("iloveyou", "alice", 8)),
            "password_too_common"
        );
        assert_eq!(
            code(check_policy("Alice.Liddell", "alice.liddell", 8)),
            "password_is_username"
        );
        assert_eq!(
            code(check_policy("correct horse battery", "alice", 8)),
            "ok"
        );
        // Length is counted in characters, not bytes.
        assert_eq!(
            code(check_policy("ééééééé", "alice", 8)),
            "password_too_short"
        );
    }

    #[test]
    fn the_common_list_has_at_least_ten_thousand_entries() {
        assert!(COMMON.len() >= 10_000, "{}", COMMON.len());
    }

    #[tokio::test]
    async fn a_hash_verifies_and_a_wrong_password_does_not() {
        let hasher = Hasher::new(1, Duration::from_secs(5), Arc::default()).unwrap();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let ok = hasher
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified::Match {
                needs_rehash: false
            }
        );
        let bad = hasher
            .verify("wrong horse".into(), Some(phc))
            .await
            .unwrap();
        assert_eq!(bad, Verified::Mismatch);
        // With no user, even the dummy's own password does not match.
        let none = hasher
            .verify("portcullis dummy password for unknown users".into(), None)
            .await
            .unwrap();
        assert_eq!(none, Verified::Mismatch);
    }

    #[tokio::test]
    async fn a_hash_with_older_parameters_verifies_and_asks_for_a_rehash() {
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();
        let hasher = Hasher::new(1, Duration::from_secs(5), Arc::default()).unwrap();
        let got = hasher
            .verify("correct horse".into(), Some(old))
            .await
            .unwrap();
        assert_eq!(got, Verified::Match { needs_rehash: true });
    }
}
