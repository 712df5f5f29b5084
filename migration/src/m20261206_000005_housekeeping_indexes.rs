//! Indexes for housekeeping: expired refresh tokens and ended sessions are found by their times, and a
//! token's earlier and later siblings by session and creation time (which also serves every lookup
//! the index on the session alone served). And revocations by what they revoke, for the token checks
//! that read the log while the deny list is unavailable.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, columns) in indexes() {
            let mut index = Index::create();
            index.name(name).table(table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("idx_refresh_tokens_session")
                    .table(RefreshTokens::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_tokens_session")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;
        for (name, table, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

fn indexes() -> [(&'static str, DynIden, Vec<DynIden>); 5] {
    [
        (
            "idx_revocations_kind_value",
            Revocations::Table.into_iden(),
            vec![
                Revocations::Kind.into_iden(),
                Revocations::Value.into_iden(),
            ],
        ),
        (
            "idx_refresh_tokens_session_created",
            RefreshTokens::Table.into_iden(),
            vec![
                RefreshTokens::SessionId.into_iden(),
                RefreshTokens::CreatedAt.into_iden(),
            ],
        ),
        (
            "idx_refresh_tokens_expires_at",
            RefreshTokens::Table.into_iden(),
            vec![RefreshTokens::ExpiresAt.into_iden()],
        ),
        (
            "idx_sessions_revoked_at",
            Sessions::Table.into_iden(),
            vec![Sessions::RevokedAt.into_iden()],
        ),
        (
            "idx_sessions_expires_at",
            Sessions::Table.into_iden(),
            vec![Sessions::ExpiresAt.into_iden()],
        ),
    ]
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    SessionId,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Revocations {
    Table,
    Kind,
    Value,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    RevokedAt,
    ExpiresAt,
}
