//! What a client may do with a token it holds: revoke it (RFC 7009) and, for a resource server,
//! introspect it (RFC 7662).

use std::sync::Arc;

use super::{
    client::AuthenticatedClient, refresh, revocation::Revoker, secret, verifier::Verifier,
};
use crate::{
    error::Error,
    ports::{Sessions, Users},
    value::claims::AccessClaims,
};

pub struct Tokens {
    pub verifier: Arc<Verifier>,
    pub revoker: Arc<Revoker>,
    pub sessions: Arc<dyn Sessions>,
    pub users: Arc<dyn Users>,
}

impl Tokens {
    /// Revoking a refresh token revokes its session; revoking an access token denies it until it
    /// expires. Only the client a token was issued to can revoke it, and an unknown, malformed, expired
    /// or foreign token needs nothing done: the answer is the same for all.
    pub async fn revoke(&self, client: &AuthenticatedClient, token: &str) -> Result<(), Error> {
        if looks_like_jwt(token) {
            if let Ok(claims) = self.verifier.verify(token)
                && claims.client_id == client.id
            {
                self.revoker.access_token(&claims).await?;
                tracing::info!(jti = %claims.jti, client = %client.id, "access token revoked");
            }
        } else if token.len() <= refresh::MAX_LENGTH
            && let Some(found) = self.sessions.refresh_token(&secret::hash(token)).await?
            && found.session.client_id == client.id
        {
            let sid = found.session.id;
            self.revoker.session(sid, "revoked_by_client").await?;
            tracing::info!(%sid, client = %client.id, "session revoked");
        }
        Ok(())
    }

    /// The claims of a live access token that passed every check, `None` for anything else; `Err` only
    /// when that cannot be known now (the deny list is unavailable). A user's token is live only while
    /// the user is: a disable takes effect here at once.
    pub async fn introspect(&self, token: &str) -> Result<Option<AccessClaims>, Error> {
        let claims = match self.verifier.check(token).await {
            Ok(claims) => claims,
            Err(e @ Error::Unavailable { .. }) => return Err(e),
            Err(_) => return Ok(None),
        };
        if claims.username.is_some() {
            let active = match claims.sub.parse() {
                Ok(id) => self.users.is_active(id).await?,
                Err(_) => false,
            };
            if !active {
                return Ok(None);
            }
        }
        Ok(Some(claims))
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}
