//! Failure throttling, shared by every instance through Redis (in-process without Redis). After
//! `throttle.failures` failed password grants for one username from one address, each further attempt
//! from that address waits `throttle.base_delay`, doubling per failure up to `throttle.max_delay`; a
//! success resets it. More than `throttle.user_ceiling` failures for one username within an hour, from
//! all addresses together, delay every address the same way.
//!
//! Addresses are counted as the rate limits count them ([`address_key`]: an IPv6 client by its /64).
//! Keyed by username *and* address, an attacker failing from elsewhere cannot lock a user out of their
//! own address, except past the looser per-username ceiling. Unknown usernames are counted alike.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

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

    /// Seconds this attempt must still wait, rounded up (0: go ahead). Times are milliseconds since the
    /// epoch: whole seconds would let a one-second delay round down to nothing.
    pub async fn wait(&self, username: &str, ip: IpAddr, now: i64) -> Result<u64, String> {
        let (address, user) = keys(username, ip);
        let [by_address, by_user] = self.counters.read([&address, &user], now).await?;
        let r = &self.rules;
        let address_wait = wait(by_address, i64::from(r.failures), r, now);
        let user_wait = wait(by_user, i64::from(r.user_ceiling) + 1, r, now);
        Ok(address_wait.max(user_wait).div_ceil(MS as u64))
    }

    pub async fn failed(&self, username: &str, ip: IpAddr, now: i64) -> Result<(), String> {
        let (address, user) = keys(username, ip);
        self.counters.failed(&address, &user, now).await
    }

    pub async fn succeeded(&self, username: &str, ip: IpAddr) -> Result<(), String> {
        let (address, _) = keys(username, ip);
        self.counters.reset(&address).await
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

impl Counters {
    async fn read(&self, keys: [&str; 2], now: i64) -> Result<[Counter; 2], String> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("HMGET")
                        .arg(format!("{prefix}{key}"))
                        .arg("n")
                        .arg("last");
                }
                let rows: Vec<(Option<i64>, Option<i64>)> =
                    bounded(pipe.query_async(&mut conn)).await?;
                let counter = |(n, last): (Option<i64>, Option<i64>)| Counter {
                    failures: n.unwrap_or(0),
                    last: last.unwrap_or(0),
                    expires: 0,
                };
                Ok([counter(rows[0]), counter(rows[1])])
            }
            Self::Memory(map) => {
                let map = map.lock().expect("throttle lock");
                let get = |k: &str| {
                    map.get(k)
                        .filter(|c| c.expires > now)
                        .copied()
                        .unwrap_or_default()
                };
                Ok([get(keys[0]), get(keys[1])])
            }
        }
    }

    async fn failed(&self, address: &str, user: &str, now: i64) -> Result<(), String> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let (address, user) = (format!("{prefix}{address}"), format!("{prefix}{user}"));
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("HINCRBY")
                    .arg(&address)
                    .arg("n")
                    .arg(1)
                    .ignore()
                    .cmd("HSET")
                    .arg(&address)
                    .arg("last")
                    .arg(now)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&address)
                    .arg(ADDRESS_MEMORY_SECS)
                    .ignore()
                    .cmd("HINCRBY")
                    .arg(&user)
                    .arg("n")
                    .arg(1)
                    .ignore()
                    .cmd("HSET")
                    .arg(&user)
                    .arg("last")
                    .arg(now)
                    .ignore()
                    // The hour starts at the first failure and is not extended by later ones.
                    .cmd("EXPIRE")
                    .arg(&user)
                    .arg(USER_WINDOW_SECS)
                    .arg("NX")
                    .ignore();
                bounded(pipe.query_async::<()>(&mut conn)).await
            }
            Self::Memory(map) => {
                let mut map = map.lock().expect("throttle lock");
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
                Ok(())
            }
        }
    }

    async fn reset(&self, address: &str) -> Result<(), String> {
        match self {
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                bounded(
                    redis::cmd("DEL")
                        .arg(format!("{prefix}{address}"))
                        .query_async::<()>(&mut conn),
                )
                .await
            }
            Self::Memory(map) => {
                map.lock().expect("throttle lock").remove(address);
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
        let mut waits = Vec::new();
        for now in 0..6 {
            t.failed("alice", ip, now * 100_000).await.unwrap();
            waits.push(t.wait("alice", ip, now * 100_000).await.unwrap());
        }
        assert_eq!(waits, [0, 0, 2, 4, 8, 10]);
        // Time pays the delay off, to the millisecond; part of a second still owed counts as one.
        assert_eq!(t.wait("alice", ip, 500_000 + 9_999).await.unwrap(), 1);
        assert_eq!(t.wait("alice", ip, 500_000 + 10_000).await.unwrap(), 0);
        // Another address is not slowed while the user is under the ceiling... but six failures in the
        // hour are over it (5), so every address waits too.
        assert_eq!(
            t.wait("alice", "192.0.2.2".parse().unwrap(), 500_000)
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
            t.failed("alice", ip(&format!("2001:db8:1:2::{i}")), 0)
                .await
                .unwrap();
        }
        assert_eq!(
            t.wait("alice", ip("2001:db8:1:2:ab::cd"), 0).await.unwrap(),
            2
        );
        assert_eq!(t.wait("alice", ip("2001:db8:1:3::1"), 0).await.unwrap(), 0);
        t.succeeded("alice", ip("2001:db8:1:2::99")).await.unwrap();
        assert_eq!(t.wait("alice", ip("2001:db8:1:2::1"), 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn success_resets_the_address_and_case_does_not_matter() {
        let t = Throttle::memory(rules());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            t.failed("Alice", ip, 0).await.unwrap();
        }
        assert_eq!(t.wait("ALICE", ip, 0).await.unwrap(), 2);
        t.succeeded("alice", ip).await.unwrap();
        assert_eq!(t.wait("alice", ip, 0).await.unwrap(), 0);
    }
}
