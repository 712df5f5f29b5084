//! Account recovery and verified addresses: whether a user's email is verified, and the single-use tokens
//! of the links mailed for a password reset or an email verification, each stored only as a hash.
//! Existing addresses start unverified: nothing has proven them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::EmailVerified).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AccountTokens::Table)
                    .col(binary_len(AccountTokens::TokenHash, 32).primary_key())
                    .col(uuid(AccountTokens::UserId))
                    // `password_reset` or `email_verification`.
                    .col(string_len(AccountTokens::Purpose, 32))
                    // The address a verification link proves; none for a reset.
                    .col(text_null(AccountTokens::Email))
                    .col(timestamp_with_time_zone(AccountTokens::CreatedAt))
                    .col(timestamp_with_time_zone(AccountTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AccountTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(AccountTokens::Table, AccountTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_account_tokens_user_id", AccountTokens::UserId),
            ("idx_account_tokens_expires_at", AccountTokens::ExpiresAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AccountTokens::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        // Every message sent about an account, for the per-account budget that holds on every instance.
        manager
            .create_table(
                Table::create()
                    .table(AccountMail::Table)
                    .col(big_integer(AccountMail::Id).auto_increment().primary_key())
                    .col(uuid(AccountMail::UserId))
                    .col(timestamp_with_time_zone(AccountMail::SentAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(AccountMail::Table, AccountMail::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_account_mail_user_id_sent_at")
                    .table(AccountMail::Table)
                    .col(AccountMail::UserId)
                    .col(AccountMail::SentAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AccountMail::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AccountTokens::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailVerified)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    EmailVerified,
}

#[derive(DeriveIden)]
enum AccountTokens {
    Table,
    TokenHash,
    UserId,
    Purpose,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum AccountMail {
    Table,
    Id,
    UserId,
    SentAt,
}
