//! A refresh token is spent when its successor exists (the successor's hash is derived from the
//! token's), so the column that recorded the spend, and the write that set it, are gone.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .drop_column(RefreshTokens::SpentAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RefreshTokens::Table)
                    .add_column(timestamp_with_time_zone_null(RefreshTokens::SpentAt))
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    SpentAt,
}
