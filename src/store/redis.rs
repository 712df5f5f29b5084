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
