//! argon2id hashing on a bounded pool of dedicated threads at idle priority, and verification against a
//! stored hash or, for unknown users, a dummy one.
//!
//! Hashing costs about 20 ms of CPU and 19 MiB of memory, so it never runs on the async threads and
//! never more than one per core at once; a caller that cannot get a slot soon is told to come back
//! (`503` + `Retry-After`) instead of queueing without end.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::{error::Error, metrics::Metrics};

/// The outcome of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Match { needs_rehash: bool },
    Mismatch,
}

/// argon2id with the OWASP parameters (m=19456 KiB, t=2, p=1), on a fixed pool of hashing threads.
///
/// Each thread keeps one block buffer (19 MiB) and reuses it for every hash: argon2's allocating API
/// costs about 210 MiB of resident memory per hashing thread under glibc, and page faults besides. A semaphore with a bounded wait sits in front, so callers never queue without end.
pub struct Hasher {
    params: Params,
    slots: Arc<Semaphore>,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// A hash of nothing anyone knows: unknown users are verified against it, so that they cost what
    /// a wrong password costs (same answer, same time).
    dummy: String,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl Hasher {
    /// `slots` hashing threads (one per core is right); a caller waits at most `max_wait` for one.
    pub fn new(slots: usize, max_wait: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let params = Params::default();
        let slots = slots.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..slots {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    lower_priority();
                    let mut blocks = Vec::new();
                    loop {
                        // The lock is held only to take a job, never while hashing.
                        let job = queue.lock().map(|q| q.recv());
                        match job {
                            Ok(Ok(job)) => job(&mut blocks),
                            _ => return, // the hasher is gone
                        }
                    }
                })?;
        }
        let dummy = hash_into(
            &params,
            b"portcullis dummy password for unknown users",
            &mut Vec::new(),
        )
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(slots)),
            max_wait,
            metrics,
            jobs,
            dummy,
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let params = self.params.clone();
        self.run(move |blocks| {
            hash_into(&params, password.as_bytes(), blocks)
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
            .run(
                move |blocks| match verify_into(password.as_bytes(), &phc, blocks) {
                    Some(stored) => Verified::Match {
                        needs_rehash: needs_rehash(&stored, &want),
                    },
                    None => Verified::Mismatch,
                },
            )
            .await?;
        Ok(if known { verified } else { Verified::Mismatch })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
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
        // With a permit there is a free thread: the channel never holds more jobs than threads.
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            let _ = done.send(work(blocks));
            drop(permit);
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal(anyhow::anyhow!("the hashing threads are gone")))?;
        let out = result
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("a hashing job failed")));
        drop(queued);
        out
    }
}

/// Hashing yields the CPU to everything else: under a login flood, token checks and the JWKS preempt the
/// hashing threads the moment they wake instead of queueing behind them, and logins get every idle
/// cycle. `SCHED_IDLE` rather than a nice value, because only it makes a waking request thread preempt a
/// hash at once. The price is that when every core is busy with other work, hashing nearly stops: the
/// server sheds logins first (queued ones get `503` after `hash_queue_wait_ms`) and keeps serving tokens.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // A failure leaves the thread as it was, which is harmless.
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::debug!(error = ?e, "hashing threads keep the normal scheduling policy");
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

/// Grows `blocks` to what `params` needs; it is never shrunk, so a thread allocates once.
fn blocks_for<'a>(params: &Params, blocks: &'a mut Vec<Block>) -> &'a mut [Block] {
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    &mut blocks[..needed]
}

/// What argon2's `hash_password` does, with the caller's memory.
fn hash_into(
    params: &Params,
    password: &[u8],
    blocks: &mut Vec<Block>,
) -> argon2::password_hash::Result<String> {
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, blocks_for(params, blocks))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// What argon2's `verify_password` does, with the caller's memory: the parameters, salt and length come
/// from the stored hash, and the comparison is constant-time. Returns the parsed hash on a match.
fn verify_into(password: &[u8], phc: &str, blocks: &mut Vec<Block>) -> Option<PasswordHash> {
    let stored = PasswordHash::new(phc).ok()?;
    let algorithm = Algorithm::try_from(stored.algorithm.as_str()).ok()?;
    let version = stored
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .ok()?;
    let params = Params::try_from(&stored).ok()?;
    let (salt, expected) = (stored.salt.as_ref()?, stored.hash.as_ref()?);
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, &mut out, blocks_for(&params, blocks))
        .ok()?;
    bool::from(out.ct_eq(expected.as_bytes())).then_some(stored)
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
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_with_a_reused_buffer_are_argon2s_own_in_both_directions() {
        let mut blocks = Vec::new();
        let ours = hash_into(&Params::default(), b"correct horse", &mut blocks).unwrap();
        let argon = Argon2::default();
        assert!(
            argon
                .verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap())
                .is_ok()
        );
        let theirs = argon.hash_password(b"correct horse").unwrap().to_string();
        assert!(verify_into(b"correct horse", &theirs, &mut blocks).is_some());
        assert!(verify_into(b"wrong horse", &theirs, &mut blocks).is_none());
        assert!(verify_into(b"correct horse", "not a phc string", &mut blocks).is_none());
        // One buffer, sized once.
        assert_eq!(blocks.len(), Params::default().block_count());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_threads_run_under_sched_idle() {
        let _hasher = Hasher::new(2, Duration::from_secs(5), Arc::default()).unwrap();
        let policies = || {
            let mut policies = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").unwrap() {
                let task = task.unwrap().path();
                let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
                if comm.starts_with("argon2-") {
                    // Field 41 of stat is the scheduling policy; the name in field 2 has no spaces.
                    let stat = std::fs::read_to_string(task.join("stat")).unwrap();
                    policies.push(stat.split(' ').nth(40).unwrap().parse::<i32>().unwrap());
                }
            }
            policies
        };
        // A thread sets its own policy as it starts: give the new ones a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = policies();
        while !(seen.len() >= 2 && seen.iter().all(|p| *p == libc::SCHED_IDLE))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
            seen = policies();
        }
        assert!(seen.len() >= 2, "{seen:?}");
        assert!(seen.iter().all(|p| *p == libc::SCHED_IDLE), "{seen:?}");
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
