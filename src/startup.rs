//! Builds the application from settings: the same path for `portcullis serve` and for the tests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpListener},
};

use crate::{
    config::Settings,
    http::timeouts::Deadlines,
    ports::{Clock, SystemClock},
    state::AppState,
};

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct App {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    acceptor: poem::listener::TcpAcceptor,
}

impl App {
    /// Wires the state and binds the listener; port 0 picks a free port, which [`App::addr`] reports.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with another clock, for tests where time is the subject.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let bind = settings.server.bind;
        let state = Arc::new(AppState::build_with_clock(settings, clock).await?);
        let acceptor = TcpListener::bind(bind)
            .into_acceptor()
            .await
            .with_context(|| format!("binding {bind} (server.bind)"))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no address")?;
        Ok(Self {
            addr,
            state,
            acceptor,
        })
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish within a bound.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let deadlines = Deadlines::new(&self.state.settings.server);
        let routes = deadlines.track(crate::http::routes(self.state.clone()));
        let housekeeping = tokio::spawn(housekeeping(self.state.clone()));
        let purges = tokio::spawn(purge_periodically(self.state.clone()));
        let rescans = tokio::spawn(rescan_keys(self.state.clone()));
        let revocations = {
            let state = self.state.clone();
            let period = Duration::from_secs(state.settings.keys.rescan_interval);
            tokio::spawn(async move { state.revoker.follow(period).await })
        };
        let result = Server::new_with_acceptor(deadlines.accept(self.acceptor))
            .run_with_graceful_shutdown(routes, shutdown, Some(SHUTDOWN_GRACE))
            .await;
        housekeeping.abort();
        purges.abort();
        rescans.abort();
        revocations.abort();
        self.state.db.clone().close().await;
        result
    }
}

/// Drops stale rate-limit keys and throttle counters, so they stay bounded.
async fn housekeeping(state: Arc<AppState>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        state.limits.housekeeping();
        state.mail_limit.housekeeping();
        state.login.housekeeping(state.clock.now());
    }
}

/// Deletes what can no longer matter every `maintenance.purge_interval` seconds (never when `0`).
async fn purge_periodically(state: Arc<AppState>) {
    let Some(period) = state.settings.maintenance.purge_period() else {
        return;
    };
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        match crate::store::housekeeping::purge(
            &state.db,
            state.clock.now(),
            state.settings.access_ttl(),
        )
        .await
        {
            Ok(purged) => {
                for (table, rows) in purged.tables() {
                    state
                        .metrics
                        .purged_rows
                        .get_or_create(&crate::metrics::TableLabels { table })
                        .inc_by(rows);
                }
                tracing::info!(?purged, "housekeeping pass");
            }
            Err(e) => tracing::warn!(error = %e, "housekeeping pass failed; retrying at the next"),
        }
    }
}

/// Rescans the key folder every `keys.rescan_interval` and on SIGHUP, so that instances sharing the folder
/// agree on the JWKS and keys change state on time. A failed scan keeps the last good key set.
async fn rescan_keys(state: Arc<AppState>) {
    let period = Duration::from_secs(state.settings.keys.rescan_interval);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        tokio::select! {
            _ = every.tick() => {}
            _ = hup => tracing::info!("SIGHUP: rescanning the key folder"),
        }
        let keys = state.keys.clone();
        match tokio::task::spawn_blocking(move || keys.rescan()).await {
            Ok(Ok(true)) => {
                state.metrics.key_set_changes.inc();
                let set = state.keys.current();
                tracing::info!(signing = %set.signing().kid, published = set.keys().len(), "key set changed");
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(
                error = format!("{e:#}"),
                "key rescan failed; keeping the last key set"
            ),
            Err(e) => tracing::error!(error = %e, "key rescan task failed"),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
