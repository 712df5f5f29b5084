//! The revocation feed: every deny-list entry, numbered, so that resource servers verifying tokens
//! locally can ask for what was revoked since their last look. Rows go once their tokens have expired.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Revocations::Table)
                    .col(big_pk_auto(Revocations::Seq))
                    .col(string_len(Revocations::Kind, 8))
                    .col(string_len(Revocations::Value, 128))
                    .col(big_integer_null(Revocations::NotBefore))
                    .col(timestamp_with_time_zone(Revocations::ExpiresAt))
                    .col(timestamp_with_time_zone(Revocations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_revocations_expires_at")
                    .table(Revocations::Table)
                    .col(Revocations::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Revocations::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Revocations {
    Table,
    Seq,
    Kind,
    Value,
    NotBefore,
    ExpiresAt,
    CreatedAt,
}
