use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_id: String,
    /// SHA-256 of the secret; `None` for public clients.
    pub secret_hash: Option<Vec<u8>>,
    pub is_public: bool,
    /// Space-separated grant types.
    pub grant_types: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Space-separated registered redirect URIs (a registered URI holds no space).
    pub redirect_uris: String,
    /// Space-separated registered post-logout redirect URIs.
    pub post_logout_redirect_uris: String,
    pub created_at: DateTimeUtc,
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

impl From<Model> for crate::value::account::Client {
    fn from(m: Model) -> Self {
        use crate::value::{grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope};
        // Each URI passed these rules at creation; one that stricter rules now refuse is left out, so
        // nothing is ever redirected to it.
        let uris = |list: &str| -> Vec<RedirectUri> {
            list.split_whitespace()
                .filter_map(|uri| RedirectUri::parse(uri).ok())
                .collect()
        };
        Self {
            grant_types: m
                .grant_types
                .split(' ')
                .filter_map(GrantType::parse)
                .collect(),
            scopes: Scope::parse(&m.scopes).unwrap_or_default(),
            redirect_uris: uris(&m.redirect_uris),
            post_logout_redirect_uris: uris(&m.post_logout_redirect_uris),
            is_public: m.is_public,
            secret_hash: m.secret_hash,
            id: m.client_id,
            created_at: m.created_at,
        }
    }
}
