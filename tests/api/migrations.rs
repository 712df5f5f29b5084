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
        let db = portcullis::store::connect(&test_db.url, 2).await.unwrap().writer().clone();

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

/// A user row as the schema before the email migration holds it.
async fn insert_user(db: &sea_orm::DatabaseConnection, username: &str, email: &str) {
    use migration::{Alias, Query};
    use sea_orm::ConnectionTrait;
    let now = chrono::Utc::now();
    let columns = [
        "id",
        "username",
        "username_key",
        "email",
        "password_hash",
        "is_active",
        "is_admin",
        "password_changed_at",
        "created_at",
        "updated_at",
    ];
    db.execute(
        Query::insert()
            .into_table(Alias::new("users"))
            .columns(columns.map(Alias::new))
            .values_panic([
                uuid::Uuid::now_v7().into(),
                username.into(),
                username.to_lowercase().into(),
                email.into(),
                "not-a-hash".into(),
                true.into(),
                false.into(),
                now.into(),
                now.into(),
                now.into(),
            ]),
    )
    .await
    .unwrap();
}

on_both_databases! {
    async fn the_email_migration_stops_on_addresses_that_differ_only_by_case_naming_them(backend: Backend) {
        use sea_orm::{ConnectionTrait, Statement};
        // Arrange: the schema just before the migration, with two addresses that differ only by case.
        let test_db = TestDatabase::new(backend).await;
        let db = portcullis::store::connect(&test_db.url, 2).await.unwrap().writer().clone();
        let before = Migrator::migrations()
            .iter()
            .position(|m| m.name() == "m20261206_000006_email_unique_ignoring_case")
            .unwrap();
        Migrator::up(&db, Some(before as u32)).await.unwrap();
        insert_user(&db, "alice", "Alice@Example.com").await;
        insert_user(&db, "alice2", "alice@example.COM").await;
        insert_user(&db, "bob", "Bob@Example.com").await;

        // Act
        let err = Migrator::up(&db, None).await.expect_err("clashing addresses stop the migration");

        // Assert: the error names the address and the problem, and nothing changed.
        let message = err.to_string();
        assert!(message.contains("alice@example.com") && message.contains("regardless of case"), "{message}");
        assert!(!message.contains("bob@example.com"), "{message}");
        assert!(!SchemaManager::new(&db).has_column("users", "email_key").await.unwrap());
        assert_eq!(Migrator::get_pending_migrations(&db).await.unwrap().len(), Migrator::migrations().len() - before);

        // Once the operator gives each user a distinct address, it runs, keeping every spelling.
        db.execute_unprepared("UPDATE users SET email = 'alice@work.example.com' WHERE username = 'alice2'").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(backend, "SELECT email, email_key FROM users ORDER BY username"))
            .await
            .unwrap();
        let pairs: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.try_get("", "email").unwrap(), r.try_get("", "email_key").unwrap()))
            .collect();
        assert_eq!(pairs, [
            ("Alice@Example.com".to_owned(), "alice@example.com".to_owned()),
            ("alice@work.example.com".to_owned(), "alice@work.example.com".to_owned()),
            ("Bob@Example.com".to_owned(), "bob@example.com".to_owned()),
        ]);
        db.close().await.unwrap();
    }
}

on_both_databases! {
    async fn the_redirect_uri_migration_gives_existing_clients_none_and_down_removes_the_columns(backend: Backend) {
        use migration::{Alias, Query};
        use sea_orm::{ConnectionTrait, Statement};
        // Arrange: the schema just before the migration, with a client.
        let test_db = TestDatabase::new(backend).await;
        let db = portcullis::store::connect(&test_db.url, 2).await.unwrap().writer().clone();
        let name = "m20261206_000007_client_redirect_uris";
        let before = Migrator::migrations().iter().position(|m| m.name() == name).unwrap();
        Migrator::up(&db, Some(before as u32)).await.unwrap();
        db.execute(
            Query::insert()
                .into_table(Alias::new("clients"))
                .columns(["client_id", "is_public", "grant_types", "scopes", "created_at"].map(Alias::new))
                .values_panic(["old".into(), true.into(), "password".into(), "".into(), chrono::Utc::now().into()]),
        )
        .await
        .unwrap();

        // Act
        Migrator::up(&db, Some(1)).await.unwrap();

        // Assert: the client has no URIs, and rolling back removes both columns.
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT redirect_uris, post_logout_redirect_uris FROM clients",
            ))
            .await
            .unwrap();
        let lists: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.try_get("", "redirect_uris").unwrap(), r.try_get("", "post_logout_redirect_uris").unwrap()))
            .collect();
        assert_eq!(lists, [(String::new(), String::new())]);
        Migrator::down(&db, Some(1)).await.unwrap();
        let manager = SchemaManager::new(&db);
        for column in ["redirect_uris", "post_logout_redirect_uris"] {
            assert!(!manager.has_column("clients", column).await.unwrap(), "{column}");
        }
        assert_eq!(Migrator::get_pending_migrations(&db).await.unwrap()[0].name(), name);
        db.close().await.unwrap();
    }
}
