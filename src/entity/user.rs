use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub username: String,
    /// The lowercased username: usernames are unique regardless of case.
    #[sea_orm(unique)]
    pub username_key: String,
    /// The email as the user gave it, for display.
    #[sea_orm(unique)]
    pub email: Option<String>,
    /// The lowercased email: addresses are unique regardless of case.
    #[sea_orm(unique)]
    pub email_key: Option<String>,
    /// Whether a link mailed to `email` was opened (or the operator vouched for it).
    pub email_verified: bool,
    pub password_hash: String,
    pub is_active: bool,
    pub is_admin: bool,
    pub password_changed_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::session::Entity")]
    Sessions,
}

impl Related<super::session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Sessions.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl From<Model> for crate::value::account::User {
    fn from(m: Model) -> Self {
        Self {
            id: m.id,
            username: m.username,
            email: m.email,
            email_verified: m.email_verified,
            password_hash: m.password_hash,
            is_active: m.is_active,
            is_admin: m.is_admin,
            password_changed_at: m.password_changed_at,
            created_at: m.created_at,
        }
    }
}
