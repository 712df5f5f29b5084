//! A client's registered redirect URIs and post-logout redirect URIs, each a space-separated list (a
//! registered URI holds no space). Existing clients get none: they keep the grants they had.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [Clients::RedirectUris, Clients::PostLogoutRedirectUris] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clients::Table)
                        .add_column(text(column).default(""))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Clients::PostLogoutRedirectUris, Clients::RedirectUris] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Clients::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    RedirectUris,
    PostLogoutRedirectUris,
}
