//! Email addresses are unique regardless of case: `email_key` holds each address lowercased and carries
//! the unique index, while `email` keeps the spelling the user gave. The key is computed here as the
//! server computes it (`str::to_lowercase`), not by SQL `LOWER`, which folds only ASCII on SQLite.
//!
//! Existing addresses that differ only by case stop the migration, before anything changes, with an error
//! naming them: which account keeps an address is the operator's decision, not the migration's.

use std::collections::BTreeMap;

use sea_orm_migration::{prelude::*, schema::*, sea_orm::ConnectionTrait};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// How many clashing addresses the error lists.
const SHOWN: usize = 10;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let rows = db
            .query_all(
                Query::select()
                    .column(Users::Email)
                    .from(Users::Table)
                    .and_where(Expr::col(Users::Email).is_not_null()),
            )
            .await?;
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in rows {
            let email: String = row.try_get("", "email")?;
            by_key.entry(email.to_lowercase()).or_default().push(email);
        }
        let clashes: Vec<&String> = by_key
            .iter()
            .filter(|(_, emails)| emails.len() > 1)
            .map(|(key, _)| key)
            .collect();
        if !clashes.is_empty() {
            let shown: Vec<&str> = clashes.iter().take(SHOWN).map(|k| k.as_str()).collect();
            return Err(DbErr::Migration(format!(
                "email addresses must be unique regardless of case, but {} address(es) belong to more than \
                 one user when case is ignored: {}{}; give each of those users a distinct address (or none), \
                 then migrate again",
                clashes.len(),
                shown.join(", "),
                if clashes.len() > SHOWN { ", …" } else { "" },
            )));
        }

        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(string_null(Users::EmailKey))
                    .to_owned(),
            )
            .await?;
        // Most addresses are stored lowercase already: copy them all, then fix the others one by one.
        db.execute(
            Query::update()
                .table(Users::Table)
                .value(Users::EmailKey, Expr::col(Users::Email)),
        )
        .await?;
        for (key, emails) in &by_key {
            if emails[0] != *key {
                db.execute(
                    Query::update()
                        .table(Users::Table)
                        .value(Users::EmailKey, key.as_str())
                        .and_where(Expr::col(Users::Email).eq(emails[0].as_str())),
                )
                .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name("idx-users-email_key")
                    .table(Users::Table)
                    .col(Users::EmailKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx-users-email_key")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailKey)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Email,
    EmailKey,
}
