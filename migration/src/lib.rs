//! Schema migrations. One migration per schema change; a migration that has landed is never edited.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_first_data_model;
mod m20261122_000002_create_server_secrets;
mod m20261122_000003_create_revocations;
mod m20261123_000004_spend_refresh_tokens_by_successor;
mod m20261206_000005_housekeeping_indexes;
mod m20261206_000006_email_unique_ignoring_case;
mod m20261206_000007_client_redirect_uris;
mod m20261206_000008_authorization_codes_and_sign_in_sessions;
mod m20261206_000009_sessions_through_sign_in;
mod m20261206_000010_account_email;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_first_data_model::Migration),
            Box::new(m20261122_000002_create_server_secrets::Migration),
            Box::new(m20261122_000003_create_revocations::Migration),
            Box::new(m20261123_000004_spend_refresh_tokens_by_successor::Migration),
            Box::new(m20261206_000005_housekeeping_indexes::Migration),
            Box::new(m20261206_000006_email_unique_ignoring_case::Migration),
            Box::new(m20261206_000007_client_redirect_uris::Migration),
            Box::new(m20261206_000008_authorization_codes_and_sign_in_sessions::Migration),
            Box::new(m20261206_000009_sessions_through_sign_in::Migration),
            Box::new(m20261206_000010_account_email::Migration),
        ]
    }
}
