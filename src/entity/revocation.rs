use sea_orm::entity::prelude::*;

/// One deny-list entry, numbered for the revocation feed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revocations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// `jti`, `sid` or `sub`.
    pub kind: String,
    pub value: String,
    /// For `sub`: tokens issued before this (seconds since the epoch) are void.
    pub not_before: Option<i64>,
    /// When every token the entry concerns has expired.
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
