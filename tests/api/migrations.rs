//! The migrations run up and down cleanly, and up again, on both databases.

use migration::{Migrator, MigratorTrait, SchemaManager};

use crate::helpers::TestDatabase;

const TABLES: [&str; 6] = [
    "users",
    "clients",
    "sessions",
    "refresh_tokens",
    "server_secrets",
    "revocations",
];

async fn tables(db: &sea_orm::DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut present = Vec::new();
    for table in TABLES {
        present.push(manager.has_table(table).await.unwrap());
    }
    present
}

on_both_databases! {
    async fn migrations_run_up_down_and_up_again(backend: Backend) {
        let test_db = TestDatabase::new(backend).await;
        let db = portcullis::store::connect(&test_db.url, 2).await.unwrap();

        Migrator::up(&db, None).await.unwrap();
        assert_eq!(tables(&db).await, [true; 6]);
        assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());

        Migrator::down(&db, None).await.unwrap();
        assert_eq!(tables(&db).await, [false; 6]);

        Migrator::up(&db, None).await.unwrap();
        assert_eq!(tables(&db).await, [true; 6]);
        // Running up when nothing is pending changes nothing.
        Migrator::up(&db, None).await.unwrap();
        db.close().await.unwrap();
    }
}
