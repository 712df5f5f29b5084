//! The client credentials grant (RFC 6749 §4.4): a confidential client acting for itself. `sub` is the
//! client id; there is no session and no refresh token (§4.4.3).

use super::{Grants, Issued, password::ADMIN_SCOPE, resolve_scope};
use crate::{
    error::Error,
    oauth::{client::AuthenticatedClient, issuer::Subject},
    value::scope::Scope,
};

impl Grants {
    pub(super) fn client_credentials(
        &self,
        client: &AuthenticatedClient,
        requested: Option<Scope>,
    ) -> Result<Issued, Error> {
        // §4.4: "MUST only be used by confidential clients".
        if client.is_public {
            return Err(Error::UnauthorizedClient);
        }
        // `admin` is a user's privilege, never a client's own.
        let scope = resolve_scope(requested, &client.scopes.without(ADMIN_SCOPE))?;
        let access = self
            .issuer
            .access_token(Subject::Client, &client.id, &scope)?;
        tracing::info!(client = %client.id, jti = %access.claims.jti, "client_credentials grant");
        Ok(Issued {
            access,
            refresh_token: None,
            id_token: None,
            scope,
        })
    }
}
