//! Persistence: one store per aggregate, sea-orm inside, domain values out. The only module that
//! knows tables.

pub mod clients;
pub mod deny_list;
pub mod housekeeping;
pub mod links;
pub mod redis;
pub mod revocation_feed;
pub mod secrets;
pub mod sessions;
pub mod sign_in;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, Select,
};

/// The database as the stores use it. SQLite lets one connection write at a time, and connections
/// that wait for that in its busy handler cost CPU and tail latency; so on SQLite every write goes
/// through one connection of its own, for which writes queue in the server, and reads through the
/// pool. On PostgreSQL both are the one pool.
#[derive(Clone, Debug)]
pub struct Db {
    reader: DatabaseConnection,
    /// SQLite's writer; without one, the pool writes too.
    writer: Option<DatabaseConnection>,
}

impl Db {
    /// For reads.
    pub fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    /// For every statement or transaction that writes.
    pub fn writer(&self) -> &DatabaseConnection {
        self.writer.as_ref().unwrap_or(&self.reader)
    }

    /// Whether the database answers, to every pool.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.reader.ping().await?;
        match &self.writer {
            Some(writer) => writer.ping().await,
            None => Ok(()),
        }
    }

    /// Closes every pool.
    pub async fn close(self) {
        self.reader.close().await.ok();
        if let Some(writer) = self.writer {
            writer.close().await.ok();
        }
    }
}

/// Connects to SQLite (WAL, foreign keys on, a busy timeout) or PostgreSQL, by URL: `max_connections`
/// for reads, and on SQLite one more that writes.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    let file = sqlite_path(url);
    if let Some(path) = file
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the database folder {}", parent.display()))?;
    }
    let reader = pool(url, max_connections).await?;
    // An in-memory SQLite database is one per connection: it keeps its one pool.
    let writer = match file {
        Some(_) => Some(pool(url, 1).await?),
        None => None,
    };
    Ok(Db { reader, writer })
}

async fn pool(url: &str, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings on every checkout by default: a round trip per query. Only a connection idle long
        // enough for a server, proxy or firewall to have dropped it is worth the ping; a broken one that
        // slips through fails its query and is discarded on release.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        // Without an idle timeout or a lifetime sqlx starts no maintenance task, whose sweep can spin a
        // core forever, and hang the process's exit, after a race in its idle count (sqlx#3645, unfixed in
        // sqlx-core 0.9.0). Connections then live until the pool closes; the check above still replaces
        // one a server or proxy has dropped.
        .idle_timeout(None)
        .max_lifetime(None)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
        });
    Database::connect(options)
        .await
        .context("connecting to the database (database.url)")
}

/// Applies every pending migration; idempotent.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    Migrator::up(db.writer(), None)
        .await
        .context("running migrations")
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
/// deferred transaction that reads before it writes fails with `SQLITE_BUSY_SNAPSHOT`, which no busy
/// timeout retries, when another connection commits in between. PostgreSQL ignores the mode.
pub(crate) async fn begin_write(db: &Db) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.writer()
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
}

/// Whether a database error is a unique-constraint violation, and on which constraint.
pub(crate) fn unique_violation(err: &sea_orm::DbErr) -> Option<String> {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(detail)) => Some(detail),
        _ => None,
    }
}

/// Lookups by a unique key. Use `.unique(db)` instead of `Select::one`: `one` binds `LIMIT 1` as a
/// parameter, and SQLite's planner reads a bound LIMIT, so it re-prepares such a statement on every
/// run; a unique key needs no LIMIT.
pub(crate) trait Unique<M> {
    async fn unique(self, db: &impl ConnectionTrait) -> Result<Option<M>, DbErr>;
}

impl<E: EntityTrait> Unique<E::Model> for Select<E> {
    async fn unique(self, db: &impl ConnectionTrait) -> Result<Option<E::Model>, DbErr> {
        Ok(self.all(db).await?.pop())
    }
}

impl<E: EntityTrait, F: EntityTrait> Unique<(E::Model, Option<F::Model>)>
    for sea_orm::SelectTwo<E, F>
{
    async fn unique(
        self,
        db: &impl ConnectionTrait,
    ) -> Result<Option<(E::Model, Option<F::Model>)>, DbErr> {
        Ok(self.all(db).await?.pop())
    }
}

impl<S: sea_orm::SelectorTrait> Unique<S::Item> for sea_orm::Selector<S> {
    async fn unique(self, db: &impl ConnectionTrait) -> Result<Option<S::Item>, DbErr> {
        Ok(self.all(db).await?.pop())
    }
}

/// A database failure is the server's, never the client's: `500` with nothing of it in the answer.
impl From<DbErr> for crate::error::Error {
    fn from(e: DbErr) -> Self {
        Self::Internal(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_connections(db: &DatabaseConnection) -> u32 {
        db.get_sqlite_connection_pool()
            .options()
            .get_max_connections()
    }

    #[tokio::test]
    async fn on_sqlite_writes_go_through_one_connection_and_reads_through_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = super::connect(&url, 4).await.unwrap();
        assert_eq!(max_connections(db.writer()), 1);
        assert_eq!(max_connections(db.reader()), 4);
    }

    #[tokio::test]
    async fn no_pool_runs_the_maintenance_task_that_can_spin() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = super::connect(&url, 2).await.unwrap();
        for pool in [db.reader(), db.writer()] {
            // sqlx spawns the task when any of these is set.
            let options = pool.get_sqlite_connection_pool().options();
            assert_eq!(options.get_idle_timeout(), None);
            assert_eq!(options.get_max_lifetime(), None);
            assert_eq!(options.get_min_connections(), 0);
        }
    }
}
