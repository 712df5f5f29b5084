//! Login protection around every password check (the password grant, a password change): while
//! failures from an address, or for a username everywhere, delay the next attempt, it is refused before
//! the password is looked at, with the wait to tell the client.

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};

use crate::{error::Error, metrics::Metrics, throttle::Throttle};

pub struct LoginGuard {
    throttle: Throttle,
    metrics: Arc<Metrics>,
}

impl LoginGuard {
    pub fn new(throttle: Throttle, metrics: Arc<Metrics>) -> Self {
        Self { throttle, metrics }
    }

    /// Refuses the attempt while earlier failures delay it.
    pub async fn check(&self, username: &str, ip: IpAddr, now: DateTime<Utc>) -> Result<(), Error> {
        match self
            .throttle
            .wait(username, ip, now.timestamp_millis())
            .await
        {
            Ok(0) => Ok(()),
            Ok(retry_after) => {
                tracing::warn!(%ip, retry_after, "password check throttled after repeated failures");
                Metrics::count(&self.metrics.rejections, "throttle");
                Err(Error::RateLimited { retry_after })
            }
            // Failing open here keeps logins possible while Redis is down; the per-address and
            // per-username rate limits still hold.
            Err(e) => {
                tracing::warn!(error = %e, "throttle unavailable; not applied");
                Ok(())
            }
        }
    }

    /// Counts a password check: a failure delays the next ones, a success resets this address's count.
    pub async fn record(&self, username: &str, ip: IpAddr, now: DateTime<Utc>, success: bool) {
        let result = if success {
            self.throttle.succeeded(username, ip).await
        } else {
            self.throttle
                .failed(username, ip, now.timestamp_millis())
                .await
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "throttle unavailable; attempt not counted");
        }
    }

    /// Forgets expired in-process counters (Redis expires its own).
    pub fn housekeeping(&self, now: DateTime<Utc>) {
        self.throttle.housekeeping(now.timestamp_millis());
    }
}
