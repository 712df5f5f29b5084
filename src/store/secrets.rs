//! Server secrets kept in the database, so that every instance shares them and restarts keep them.

use chrono::Utc;
use rand::RngCore;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set};

use super::Unique;
use crate::entity::server_secret;

/// The secret named `name`, created (256 random bits) on first use. Instances starting together agree:
/// the first insert wins and everyone reads it back.
pub async fn load_or_create(
    db: &DatabaseConnection,
    name: &str,
) -> Result<Vec<u8>, sea_orm::DbErr> {
    if let Some(found) = server_secret::Entity::find_by_id(name.to_owned())
        .unique(db)
        .await?
    {
        return Ok(found.value);
    }
    let mut value = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut value);
    let inserted = server_secret::ActiveModel {
        name: Set(name.to_owned()),
        value: Set(value),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(model) => Ok(model.value),
        Err(e) if super::unique_violation(&e).is_some() => {
            server_secret::Entity::find_by_id(name.to_owned())
                .unique(db)
                .await?
                .map(|m| m.value)
                .ok_or(e)
        }
        Err(e) => Err(e),
    }
}
