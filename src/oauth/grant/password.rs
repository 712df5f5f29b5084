//! The resource owner password credentials grant (RFC 6749 §4.3). The password is checked by
//! [`crate::oauth::login::LoginGuard::password`], as on the sign-in page.

use std::net::IpAddr;

use super::{Grants, Issued, resolve_scope};
use crate::{
    error::Error,
    oauth::client::AuthenticatedClient,
    value::{account::User, scope::Scope},
};

/// Only admin users may hold this scope.
pub const ADMIN_SCOPE: &str = "admin";

/// What `user` may be granted of a client's scopes: `admin` only when they are an admin.
pub fn grantable(client_scopes: &Scope, user: &User) -> Scope {
    if user.is_admin {
        client_scopes.clone()
    } else {
        client_scopes.without(ADMIN_SCOPE)
    }
}

impl Grants {
    pub(super) async fn password(
        &self,
        client: &AuthenticatedClient,
        username: &str,
        password: String,
        requested: Option<Scope>,
        ip: IpAddr,
    ) -> Result<Issued, Error> {
        // Checked before the password so that it reveals nothing about the user.
        if let Some(requested) = &requested
            && !requested.is_subset(&client.scopes)
        {
            return Err(Error::InvalidScope);
        }
        let now = self.clock.now();
        let user = self.login.password(username, password, ip, now).await?;
        let scope = resolve_scope(requested, &grantable(&client.scopes, &user))?;
        let started = self
            .start_session(&user, client, &scope, now)
            .await?
            // The password was checked against a user who has since changed it or been disabled.
            .ok_or(Error::InvalidGrant("the user changed during the login"))?;
        let (session, access) = (started.session, started.access);
        tracing::info!(user = %user.id, client = %client.id, sid = %session, jti = %access.claims.jti, "password grant");
        Ok(Issued {
            access,
            refresh_token: started.refresh_token,
            id_token: None,
            scope,
        })
    }
}
