//! Browser sign-in: authorization codes (RFC 6749 §4.1) and the sign-in sessions behind the authorize
//! endpoint's cookie, each stored only as a hash of its secret.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SignInSessions::Table)
                    .col(uuid(SignInSessions::Id).primary_key())
                    .col(binary_len(SignInSessions::TokenHash, 32).unique_key())
                    .col(uuid(SignInSessions::UserId))
                    .col(timestamp_with_time_zone(SignInSessions::AuthTime))
                    .col(timestamp_with_time_zone(SignInSessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(SignInSessions::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SignInSessions::Table, SignInSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthorizationCodes::Table)
                    .col(binary_len(AuthorizationCodes::CodeHash, 32).primary_key())
                    .col(string_len(AuthorizationCodes::ClientId, 128))
                    .col(uuid(AuthorizationCodes::UserId))
                    .col(uuid_null(AuthorizationCodes::SignInSessionId))
                    .col(text_null(AuthorizationCodes::RedirectUri))
                    .col(string_len(AuthorizationCodes::CodeChallenge, 128))
                    .col(text(AuthorizationCodes::Scope))
                    .col(text_null(AuthorizationCodes::Nonce))
                    .col(timestamp_with_time_zone(AuthorizationCodes::AuthTime))
                    .col(timestamp_with_time_zone(AuthorizationCodes::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AuthorizationCodes::UsedAt))
                    .col(uuid_null(AuthorizationCodes::SessionId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(AuthorizationCodes::Table, AuthorizationCodes::ClientId)
                            .to(Clients::Table, Clients::ClientId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(AuthorizationCodes::Table, AuthorizationCodes::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, table, column) in [
            (
                "idx_authorization_codes_expires_at",
                AuthorizationCodes::Table.into_iden(),
                AuthorizationCodes::ExpiresAt.into_iden(),
            ),
            (
                "idx_sign_in_sessions_expires_at",
                SignInSessions::Table.into_iden(),
                SignInSessions::ExpiresAt.into_iden(),
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuthorizationCodes::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(SignInSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SignInSessions {
    Table,
    Id,
    TokenHash,
    UserId,
    AuthTime,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuthorizationCodes {
    Table,
    CodeHash,
    ClientId,
    UserId,
    SignInSessionId,
    RedirectUri,
    CodeChallenge,
    Scope,
    Nonce,
    AuthTime,
    ExpiresAt,
    UsedAt,
    SessionId,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    ClientId,
}
