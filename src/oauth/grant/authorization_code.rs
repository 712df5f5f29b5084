//! The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6): a code is redeemed once, by
//! the client it was issued to, with the verifier of its challenge and the redirect URI it was asked
//! with; a code presented again, even at the same moment, revokes the session its first redemption
//! started (RFC 6749 §4.1.2).
//! With `openid` in the scope an ID token comes too.

use uuid::Uuid;

use super::{Grants, Issued, Started};
use crate::{
    error::Error,
    oauth::{authorize, client::AuthenticatedClient, issuer::SignedIn, secret},
    ports::{NotStarted, Redeemed},
};

/// What the token request presents with a code.
pub struct CodeRedemption {
    pub code: String,
    pub redirect_uri: Option<String>,
    pub code_verifier: String,
}

impl Grants {
    pub(super) async fn authorization_code(
        &self,
        client: &AuthenticatedClient,
        presented: CodeRedemption,
    ) -> Result<Issued, Error> {
        let now = self.clock.now();
        let hash = secret::hash(&presented.code);
        let (grant, user) = match self.codes.redeem(&hash, now).await? {
            None => return Err(Error::InvalidGrant("unknown or expired code")),
            Some(Redeemed::Again { session }) => return self.code_reused(client, session).await,
            Some(Redeemed::Fresh { grant, user }) => (grant, user),
        };
        if grant.client_id != client.id {
            return Err(Error::InvalidGrant("another client's code"));
        }
        if grant.redirect_uri.is_some() && grant.redirect_uri != presented.redirect_uri {
            return Err(Error::InvalidGrant(
                "redirect_uri differs from the request's",
            ));
        }
        if !authorize::verifies(&presented.code_verifier, &grant.code_challenge) {
            return Err(Error::InvalidGrant("code_verifier does not match"));
        }
        // The user as they are now, who must be as they were when they signed in.
        let user = user
            .filter(|u| u.is_active && u.password_changed_at <= grant.auth_time)
            .ok_or(Error::InvalidGrant("the user changed since signing in"))?;
        // The session starts where the code is claimed, atomically, so a presentation that fails
        // the checks above, or loses a race for the code, leaves nothing behind.
        let started = self
            .start_session(
                &user,
                client,
                &grant.scope,
                now,
                grant.sign_in_session,
                Some(&hash),
            )
            .await?;
        let Started {
            session,
            access,
            refresh_token,
        } = match started {
            Ok(started) => started,
            Err(NotStarted::CodeUsed { winner }) => return self.code_reused(client, winner).await,
            Err(NotStarted::UserChanged) => {
                return Err(Error::InvalidGrant(
                    "the user changed or signed out since signing in",
                ));
            }
        };
        let id_token = if grant.scope.contains("openid") {
            let signed_in = SignedIn {
                auth_time: grant.auth_time,
                nonce: grant.nonce.as_deref(),
            };
            Some(self.issuer.id_token(&user, &signed_in, &access)?)
        } else {
            None
        };
        tracing::info!(user = %user.id, client = %client.id, sid = %session, jti = %access.claims.jti, "authorization code grant");
        Ok(Issued {
            access,
            refresh_token,
            id_token,
            scope: grant.scope,
        })
    }

    /// A code presented again, even at the same moment as its first redemption: the session that
    /// redemption started is revoked.
    async fn code_reused(
        &self,
        client: &AuthenticatedClient,
        session: Option<Uuid>,
    ) -> Result<Issued, Error> {
        if let Some(session) = session {
            self.revoker.session(session, "code_reuse").await?;
        }
        tracing::warn!(client = %client.id, "authorization code presented twice");
        Err(Error::InvalidGrant("code used twice"))
    }
}
