//! What OpenID Connect says of a user, by scope (Core §5.4): `sub` always, `preferred_username` with
//! `profile`, `email` and `email_verified` with `email`. A claim without a value is left out, and so is a
//! claim whose scope was not granted. The ID token and the userinfo endpoint both say exactly this.

use serde::Serialize;

use crate::value::{account::User, scope::Scope};

/// The scope that makes an access token good at the userinfo endpoint.
pub const OPENID_SCOPE: &str = "openid";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl UserClaims {
    pub fn of(user: &User, scope: &Scope) -> Self {
        let email = user.email.clone().filter(|_| scope.contains("email"));
        Self {
            sub: user.id.to_string(),
            preferred_username: scope.contains("profile").then(|| user.username.clone()),
            email_verified: email.as_ref().map(|_| user.email_verified),
            email,
        }
    }
}
