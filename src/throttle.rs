//! Failure throttling, shared by every instance through Redis (in-process without Redis). After
//! `throttle.failures` failed password grants for one username from one address, each further attempt
//! from that address waits `throttle.base_delay`, doubling per failure up to `throttle.max_delay`; a
//! success resets it. More than `throttle.user_ceiling` failures for one username within an hour, from
//! all addresses together, delay every address the same way.
//!
//! An attempt is counted when it is admitted, before its password is checked, in one atomic step with the
//! check that admits it: attempts sent at once see each other, so no burst slips past a delay. A success
//! then resets the address's count and takes itself back from the username's; an attempt whose password
//! could not be checked at all takes itself back from both.
//!
//! Addresses are counted as the rate limits count them ([`address_key`]: an IPv6 client by its /64).
//! Keyed by username *and* address, an attacker failing from elsewhere cannot lock a user out of their
//! own address, except past the looser per-username ceiling. Unknown usernames are counted alike.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{LazyLock, Mutex},
};

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::{config::ThrottleSettings, ratelimit::address_key, store::redis::bounded};

/// How long an address's failure count is kept after its last failure.
const ADDRESS_MEMORY_SECS: i64 = 24 * 3600;
/// The per-username window.
const USER_WINDOW_SECS: i64 = 3600;
const MS: i64 = 1000;

pub struct Throttle {
    rules: ThrottleSettings,
    counters: Counters,
}

enum Counters {
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
    Memory(Mutex<HashMap<String, Counter>>),
}

#[derive(Clone, Copy, Default, Debug)]
struct Counter {
    failures: i64,
    last: i64,
    expires: i64,
}

impl Throttle {
    pub fn redis(rules: ThrottleSettings, conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            rules,
            counters: Counters::Redis {
                conn,
                prefix: prefix.to_owned(),
            },
        }
    }

    pub fn memory(rules: ThrottleSettings) -> Self {
        Self {
            rules,
            counters: Counters::Memory(Mutex::default()),
        }
    }

    /// Admits an attempt, counting it as a failure until it is known to be otherwise, or answers the
    /// seconds it must still wait, rounded up, counting nothing. Times are milliseconds since the epoch:
    /// whole seconds would let a one-second delay round down to nothing.
    pub async fn admit(&self, username: &str, ip: IpAddr, now: i64) -> Result<u64, String> {
        let (address, user) = keys(username, ip);
        let waited = self
            .counters
            .admit(&address, &user, &self.rules, now)
            .await?;
        Ok(waited.div_ceil(MS as u64))
    }

    /// The admitted attempt's password was right: the address starts afresh, and the username's count
    /// loses the attempt.
    pub async fn succeeded(&self, username: &str, ip: IpAddr) -> Result<(), String> {
        let (address, user) = keys(username, ip);
        self.counters.take_back(&address, &user, true).await
    }

    /// The admitted attempt's password could not be checked (storage or the hashing queue failed): it
    /// counts for nothing.
    pub async fn unchecked(&self, username: &str, ip: IpAddr) -> Result<(), String> {
        let (address, user) = keys(username, ip);
        self.counters.take_back(&address, &user, false).await
    }

    /// Drops expired in-process counters (Redis expires its own); `now` in milliseconds.
    pub fn housekeeping(&self, now: i64) {
        if let Counters::Memory(map) = &self.counters {
            map.lock()
                .expect("throttle lock")
                .retain(|_, c| c.expires > now);
        }
    }
}

/// The milliseconds owed after `counter.failures` failures when delays start at `threshold` failures.
fn wait(counter: Counter, threshold: i64, rules: &ThrottleSettings, now: i64) -> u64 {
    if counter.failures < threshold.max(1) {
        return 0;
    }
    let doublings = (counter.failures - threshold).clamp(0, 32) as u32;
    let delay = rules
        .base_delay
        .saturating_mul(1u64 << doublings)
        .min(rules.max_delay) as i64;
    (counter.last + delay * MS - now).max(0) as u64
}

/// Keys carry a hash of the lowercased username: fixed length, and no user input in Redis keys.
fn keys(username: &str, ip: IpAddr) -> (String, String) {
    let digest = Sha256::digest(username.to_lowercase().as_bytes());
    let user: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    (
        format!("throttle:addr:{user}:{}", address_key(ip)),
        format!("throttle:user:{user}"),
    )
}

/// The milliseconds owed before an attempt, given both counters.
fn owed(by_address: Counter, by_user: Counter, r: &ThrottleSettings, now: i64) -> u64 {
    let address_wait = wait(by_address, i64::from(r.failures), r, now);
    let user_wait = wait(by_user, i64::from(r.user_ceiling) + 1, r, now);
    address_wait.max(user_wait)
}

/// [`Counters::admit`] in Redis: both counters read, the delay computed as [`wait`] computes it, and the
/// attempt counted, in one step no other attempt can come between. KEYS: address, user; ARGV: now (ms),
/// failures threshold, user ceiling + 1, base and max delay (s), the address's and the user's memory (s).
static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local function owed(key, threshold)
  local n = tonumber(redis.call('HGET', key, 'n') or '0')
  local last = tonumber(redis.call('HGET', key, 'last') or '0')
  threshold = math.max(threshold, 1)
  if n < threshold then return 0 end
  local doublings = math.min(math.max(n - threshold, 0), 32)
  local delay = math.min(tonumber(ARGV[4]) * 2 ^ doublings, tonumber(ARGV[5]))
  return math.max(last + delay * 1000 - tonumber(ARGV[1]), 0)
end
local wait = math.max(owed(KEYS[1], tonumber(ARGV[2])), owed(KEYS[2], tonumber(ARGV[3])))
if wait > 0 then return wait end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('HSET', KEYS[2], 'last', ARGV[1])
-- The hour starts at the first failure and is not extended by later ones.
redis.call('EXPIRE', KEYS[2], ARGV[7], 'NX')
return 0
",
    )
});

/// [`Counters::take_back`] in Redis: KEYS: address, user; ARGV: '1' when the password was right.
static TAKE_BACK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
elseif tonumber(redis.call('HGET', KEYS[1], 'n') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
if tonumber(redis.call('HGET', KEYS[2], 'n') or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], 'n', -1)
end
return 0
",
    )
});

impl Counters {
    async fn admit(
        &self,
        address: &str,
        user: &str,
        r: &ThrottleSettings,
        now: i64,
    ) -> Result<u64, String> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut call = ADMIT.key(format!("{prefix}{address}"));
                call.key(format!("{prefix}{user}"))
                    .arg(now)
                    .arg(r.failures)
                    .arg(i64::from(r.user_ceiling) + 1)
                    .arg(r.base_delay)
                    .arg(r.max_delay)
                    .arg(ADDRESS_MEMORY_SECS)
                    .arg(USER_WINDOW_SECS);
                let owed: i64 = bounded(call.invoke_async(&mut conn)).await?;
                Ok(owed.max(0) as u64)
            }
            Self::Memory(map) => {
                let mut map = map.lock().expect("throttle lock");
                let get = |map: &HashMap<String, Counter>, k: &str| {
                    map.get(k)
                        .filter(|c| c.expires > now)
                        .copied()
                        .unwrap_or_default()
                };
                let owed = owed(get(&map, address), get(&map, user), r, now);
                if owed > 0 {
                    return Ok(owed);
                }
                let mut bump = |key: &str, fresh_expiry: i64, extend: bool| {
                    let c = map.entry(key.to_owned()).or_default();
                    if c.expires <= now {
                        *c = Counter {
                            failures: 0,
                            last: 0,
                            expires: fresh_expiry,
                        };
                    }
                    c.failures += 1;
                    c.last = now;
                    if extend {
                        c.expires = fresh_expiry;
                    }
                };
                bump(address, now + ADDRESS_MEMORY_SECS * MS, true);
                bump(user, now + USER_WINDOW_SECS * MS, false);
                Ok(0)
            }
        }
    }

    /// Takes an admitted attempt back from the counts; `right` (the password was) resets the address.
    async fn take_back(&self, address: &str, user: &str, right: bool) -> Result<(), String> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut call = TAKE_BACK.key(format!("{prefix}{address}"));
                call.key(format!("{prefix}{user}"))
                    .arg(if right { "1" } else { "0" });
                bounded(call.invoke_async::<()>(&mut conn)).await
            }
            Self::Memory(map) => {
                let mut map = map.lock().expect("throttle lock");
                if right {
                    map.remove(address);
                } else if let Some(c) = map.get_mut(address) {
                    c.failures = (c.failures - 1).max(0);
                }
                if let Some(c) = map.get_mut(user) {
                    c.failures = (c.failures - 1).max(0);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ThrottleSettings {
        ThrottleSettings {
            failures: 3,
            base_delay: 2,
            max_delay: 10,
            user_ceiling: 5,
        }
    }

    #[tokio::test]
    async fn delays_start_after_the_threshold_double_and_stop_at_the_maximum() {
        let t = Throttle::memory(rules());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // Each admitted attempt counts as a failure until taken back: three reach the threshold.
        for _ in 0..3 {
            assert_eq!(t.admit("alice", ip, 0).await.unwrap(), 0);
        }
        let (mut now, mut delays) = (0, Vec::new());
        for _ in 0..4 {
            let owed = t.admit("alice", ip, now).await.unwrap();
            delays.push(owed);
            assert_eq!(
                t.admit("alice", ip, now).await.unwrap(),
                owed,
                "a refusal counts nothing"
            );
            now += owed as i64 * MS;
            assert_eq!(t.admit("alice", ip, now).await.unwrap(), 0);
        }
        assert_eq!(delays, [2, 4, 8, 10]);
        // Time pays the delay off, to the millisecond; part of a second still owed counts as one.
        assert_eq!(t.admit("alice", ip, now + 9_999).await.unwrap(), 1);
        assert_eq!(t.admit("alice", ip, now + 10_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn over_the_ceiling_every_address_waits() {
        let t = Throttle::memory(rules());
        for i in 1..=6 {
            let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
            assert_eq!(t.admit("alice", ip, 0).await.unwrap(), 0);
        }
        // Six failures in the hour are over the ceiling (5): a seventh address waits too.
        assert_eq!(
            t.admit("alice", "192.0.2.7".parse().unwrap(), 0)
                .await
                .unwrap(),
            2
        );
    }

    #[tokio::test]
    async fn an_ipv6_64_is_one_address() {
        let t = Throttle::memory(rules());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 1..=3 {
            t.admit("alice", ip(&format!("2001:db8:1:2::{i}")), 0)
                .await
                .unwrap();
        }
        assert_eq!(
            t.admit("alice", ip("2001:db8:1:2:ab::cd"), 0)
                .await
                .unwrap(),
            2
        );
        assert_eq!(t.admit("alice", ip("2001:db8:1:3::1"), 0).await.unwrap(), 0);
        t.succeeded("alice", ip("2001:db8:1:2::99")).await.unwrap();
        assert_eq!(t.admit("alice", ip("2001:db8:1:2::1"), 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn success_resets_the_address_and_case_does_not_matter() {
        let t = Throttle::memory(rules());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.admit("Alice", ip, 0).await.unwrap();
        }
        assert_eq!(t.admit("ALICE", ip, 0).await.unwrap(), 2);
        t.succeeded("alice", ip).await.unwrap();
        assert_eq!(t.admit("alice", ip, 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_attempt_never_checked_counts_for_nothing() {
        let t = Throttle::memory(rules());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(t.admit("alice", ip, 0).await.unwrap(), 0);
            t.unchecked("alice", ip).await.unwrap();
        }
        assert_eq!(t.admit("alice", ip, 0).await.unwrap(), 0);
    }
}
