//! The one Redis connection every Redis-backed store shares, tuned to fail fast.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// The longest any Redis call may take before the caller is told Redis is unavailable.
pub const TIMEOUT: Duration = Duration::from_millis(300);

/// A multiplexed connection that reconnects by itself. Lazy: the server starts while Redis is down.
pub fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    // The defaults retry for about 9.5 s while Redis is down; this server must answer at once.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// Runs one Redis call within [`TIMEOUT`]; any failure comes back as its message.
pub async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Warns when Redis may evict keys under memory pressure: an evicted deny-list entry would go unnoticed
/// (its revocation is still in the database, but this server would not know to look). Needs `noeviction`.
pub async fn warn_if_evicting(conn: &ConnectionManager) {
    let mut conn = conn.clone();
    let policy = bounded(
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async::<Vec<String>>(&mut conn),
    )
    .await;
    match policy.as_deref() {
        Ok([_, policy]) if policy == "noeviction" => {}
        Ok([_, policy]) => tracing::error!(
            policy,
            "Redis may evict deny-list entries (maxmemory-policy is not noeviction); set it to noeviction"
        ),
        _ => tracing::warn!(
            "could not read Redis's maxmemory-policy; it must be noeviction, or revocations may be forgotten"
        ),
    }
}
