//! The records the domain reads and storage returns: a user, a session (one login) and a client, as
//! values, so that no layer above storage sees a table's row type.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{grant_type::GrantType, redirect_uri::RedirectUri, scope::Scope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    /// Whether `email` was proven by a mailed link (or vouched for by the operator).
    pub email_verified: bool,
    /// The PHC string of the password's argon2id hash.
    pub password_hash: String,
    pub is_active: bool,
    pub is_admin: bool,
    /// When the password was last set: a session or token from before it is void.
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// One login: the family of refresh tokens it issues and the `sid` of every access token issued in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub client_id: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    /// The last refresh, to the minute.
    pub last_used_at: DateTime<Utc>,
    /// The absolute end of the session.
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    /// SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<Vec<u8>>,
    pub is_public: bool,
    pub grant_types: Vec<GrantType>,
    pub scopes: Scope,
    /// Where the authorization endpoint may send a code; none for a client without the code flow.
    pub redirect_uris: Vec<RedirectUri>,
    /// Where `/oauth/logout` may send the browser after signing out.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    pub created_at: DateTime<Utc>,
}
