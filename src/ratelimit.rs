//! Per-instance rate limits (governor): password grants per client address and per username,
//! registrations per client address. And [`MailLimit`]: password-reset and verification requests per
//! client address, shared by every instance through Redis when it is configured. Over a limit the answer is `429` with the limiter's own
//! `Retry-After`. Old keys are dropped on a timer ([`Limits::housekeeping`]), so memory stays bounded
//! however many addresses or usernames appear. Addresses are counted by [`address_key`].

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::DashMapStateStore,
};

use crate::{config::RateLimitSettings, error::Error, metrics::Metrics};

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The client address login protection counts by (here and in the failure throttle): an IPv4 address
/// whole, an IPv6 address by its /64, the smallest block a network is given (RFC 7421), so that stepping
/// through its low bits makes no new client. `::ffff:192.0.2.1` is `192.0.2.1`.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

pub struct Limits<C: Clock + Clone = DefaultClock> {
    clock: C,
    login_per_ip: Keyed<IpAddr, C>,
    /// Keyed by a hash of the lowercased username: eight bytes a key, whatever an attacker sends.
    login_per_user: Keyed<u64, C>,
    register_per_ip: Keyed<IpAddr, C>,
    username_hasher: RandomState,
    metrics: Arc<Metrics>,
}

impl Limits<DefaultClock> {
    pub fn new(settings: &RateLimitSettings, metrics: Arc<Metrics>) -> Self {
        Self::with_clock(settings, DefaultClock::default(), metrics)
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(settings: &RateLimitSettings, clock: C, metrics: Arc<Metrics>) -> Self {
        let per_minute = |n: NonZeroU32| Quota::per_minute(n);
        Self {
            login_per_ip: RateLimiter::dashmap_with_clock(
                per_minute(settings.login_per_ip),
                clock.clone(),
            ),
            login_per_user: RateLimiter::dashmap_with_clock(
                per_minute(settings.login_per_user),
                clock.clone(),
            ),
            register_per_ip: RateLimiter::dashmap_with_clock(
                per_minute(settings.register_per_ip),
                clock.clone(),
            ),
            username_hasher: RandomState::new(),
            metrics,
            clock,
        }
    }

    /// One password grant from `ip` for `username`.
    pub fn login(&self, ip: IpAddr, username: &str) -> Result<(), Error> {
        let key = address_key(ip);
        self.check(&self.login_per_ip, &key, "rate_limit.login_per_ip", ip)?;
        let user = self.username_hasher.hash_one(username.to_lowercase());
        self.check(&self.login_per_user, &user, "rate_limit.login_per_user", ip)
    }

    /// One registration from `ip`.
    pub fn register(&self, ip: IpAddr) -> Result<(), Error> {
        let key = address_key(ip);
        self.check(
            &self.register_per_ip,
            &key,
            "rate_limit.register_per_ip",
            ip,
        )
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K, C>,
        key: &K,
        limit: &'static str,
        ip: IpAddr,
    ) -> Result<(), Error> {
        limiter.check_key(key).map_err(|not_until| {
            tracing::warn!(%ip, limit, "rate limited");
            Metrics::count(&self.metrics.rejections, limit);
            let wait = not_until.wait_time_from(self.clock.now());
            // Retry-After is whole seconds; round up so that a client that waits is let in.
            let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            Error::RateLimited { retry_after }
        })
    }

    /// Drops the keys whose buckets are full again (they would behave exactly like absent keys).
    pub fn housekeeping(&self) {
        for limiter in [&self.login_per_ip, &self.register_per_ip] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.login_per_user.retain_recent();
        self.login_per_user.shrink_to_fit();
    }

    /// How many keys the limiters hold.
    pub fn len(&self) -> usize {
        self.login_per_ip.len() + self.login_per_user.len() + self.register_per_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Password-reset and verification requests (the API's and the reset page's: one budget) per client
/// address per minute. With Redis every instance counts in one fixed one-minute window there; without it,
/// each instance counts on its own.
pub struct MailLimit {
    per_minute: u32,
    counter: MailCounter,
    metrics: Arc<Metrics>,
}

enum MailCounter {
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
    Memory(Keyed<IpAddr, DefaultClock>),
}

impl MailLimit {
    pub fn new(
        per_minute: NonZeroU32,
        redis: Option<(redis::aio::ConnectionManager, &str)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let counter = match redis {
            Some((conn, prefix)) => MailCounter::Redis {
                conn,
                prefix: prefix.to_owned(),
            },
            None => MailCounter::Memory(RateLimiter::dashmap(Quota::per_minute(per_minute))),
        };
        Self {
            per_minute: per_minute.get(),
            counter,
            metrics,
        }
    }

    /// One request from `ip` at `now` (seconds since the epoch).
    pub async fn check(&self, ip: IpAddr, now: i64) -> Result<(), Error> {
        let key = address_key(ip);
        let retry_after = match &self.counter {
            MailCounter::Memory(limiter) => match limiter.check_key(&key) {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
                }
            },
            MailCounter::Redis { conn, prefix } => {
                let window = now.div_euclid(60);
                let counter = format!("{prefix}mail_ip:{key}:{window}");
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .incr(&counter, 1)
                    .expire(&counter, 120)
                    .ignore();
                let mut conn = conn.clone();
                match crate::store::redis::bounded(pipe.query_async::<(u32,)>(&mut conn)).await {
                    Ok((count,)) if count > self.per_minute => (60 - now.rem_euclid(60)) as u64,
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        // Open rather than shut: the per-account budget still caps what is sent.
                        self.metrics.redis_errors.inc();
                        tracing::warn!(error = %e, "the mail limit could not be read in Redis; letting the request through");
                        return Ok(());
                    }
                }
            }
        };
        tracing::warn!(%ip, limit = "rate_limit.mail_per_ip", "rate limited");
        Metrics::count(&self.metrics.rejections, "rate_limit.mail_per_ip");
        Err(Error::RateLimited { retry_after })
    }

    /// Drops the in-process keys whose buckets are full again.
    pub fn housekeeping(&self) {
        if let MailCounter::Memory(limiter) = &self.counter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn settings(per_minute: u32) -> RateLimitSettings {
        let n = NonZeroU32::new(per_minute).unwrap();
        RateLimitSettings {
            login_per_ip: n,
            login_per_user: n,
            register_per_ip: n,
            mail_per_ip: n,
            mail_per_account: per_minute,
        }
    }

    #[test]
    fn the_n_plus_first_attempt_gets_an_honest_retry_after() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&settings(10), clock.clone(), Arc::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..10 {
            limits
                .register(ip)
                .unwrap_or_else(|_| panic!("attempt {i}"));
        }
        let Err(Error::RateLimited { retry_after }) = limits.register(ip) else {
            panic!("the eleventh is limited");
        };
        // Ten a minute: one cell every six seconds.
        assert_eq!(retry_after, 6);
        clock.advance(Duration::from_secs(6));
        assert!(limits.register(ip).is_ok());
    }

    #[test]
    fn a_hundred_thousand_addresses_do_not_grow_memory_without_bound() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(&settings(30), clock.clone(), Arc::default());
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            limits.register(ip).unwrap();
        }
        assert_eq!(limits.len(), 100_000);
        // Once every bucket has refilled, housekeeping drops them all.
        clock.advance(Duration::from_secs(61));
        limits.housekeeping();
        assert!(limits.is_empty(), "{} keys left", limits.len());
    }

    #[test]
    fn an_address_key_is_an_ipv4_address_or_an_ipv6_64() {
        let key = |s: &str| address_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.1"), "192.0.2.1");
        assert_eq!(key("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::");
    }

    #[test]
    fn one_ipv6_64_is_one_client_for_logins_and_registrations() {
        let limits = Limits::with_clock(&settings(2), FakeRelativeClock::default(), Arc::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        limits.login(ip("2001:db8:1:2::1"), "alice").unwrap();
        limits.login(ip("2001:db8:1:2::2"), "bob").unwrap();
        assert!(matches!(
            limits.login(ip("2001:db8:1:2:ffff::3"), "carol"),
            Err(Error::RateLimited { .. })
        ));
        limits.login(ip("2001:db8:1:3::1"), "dave").unwrap();

        limits.register(ip("2001:db8:9:9::1")).unwrap();
        limits.register(ip("2001:db8:9:9::2")).unwrap();
        assert!(matches!(
            limits.register(ip("2001:db8:9:9::3")),
            Err(Error::RateLimited { .. })
        ));
    }

    #[test]
    fn usernames_are_limited_whatever_their_case_or_address() {
        let limits = Limits::with_clock(&settings(2), FakeRelativeClock::default(), Arc::default());
        limits.login("192.0.2.1".parse().unwrap(), "Alice").unwrap();
        limits.login("192.0.2.2".parse().unwrap(), "alice").unwrap();
        assert!(matches!(
            limits.login("192.0.2.3".parse().unwrap(), "ALICE"),
            Err(Error::RateLimited { .. })
        ));
    }
}
