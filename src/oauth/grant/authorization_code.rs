//! The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6): a code is redeemed once, by
//! the client it was issued to, with the verifier of its challenge and the redirect URI it was asked
//! with; a code presented again, even at the same moment, revokes the session its first redemption
//! started (RFC 6749 §4.1.2).
//! With `openid` in the scope an ID token comes too.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Grants, Issued};
use crate::{
    error::Error,
    oauth::{authorize, client::AuthenticatedClient, issuer::SignedIn, secret},
    ports::{CodeStart, CodeStarted, Redeemed, later},
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
        let refresh = self.first_refresh(client, now);
        // Every check is a condition of the statement that claims the code and starts its session, in
        // one round trip; only a redemption that starts nothing reads the code, to say why.
        let started = match authorize::challenge_of(&presented.code_verifier) {
            Some(challenge) => {
                self.sessions
                    .start_from_code(CodeStart {
                        hash: &hash,
                        client_id: &client.id,
                        redirect_uri: presented.redirect_uri.as_deref(),
                        code_challenge: &challenge,
                        now,
                        expires_at: later(now, self.lifetimes.session),
                        refresh: refresh.stored,
                    })
                    .await?
            }
            None => None,
        };
        let Some(CodeStarted {
            session,
            grant,
            user,
        }) = started
        else {
            return Err(self.not_redeemed(client, &hash, &presented, now).await);
        };
        let access = self.access_in(&user, session.id, client, &grant.scope)?;
        let id_token = if grant.scope.contains("openid") {
            let signed_in = SignedIn {
                auth_time: grant.auth_time,
                nonce: grant.nonce.as_deref(),
            };
            Some(self.issuer.id_token(&user, &signed_in, &access)?)
        } else {
            None
        };
        tracing::info!(user = %user.id, client = %client.id, sid = %session.id, jti = %access.claims.jti, "authorization code grant");
        Ok(Issued {
            access,
            refresh_token: refresh.token,
            id_token,
            scope: grant.scope,
        })
    }

    /// Why a redemption started nothing, from the code as it is now. A code used before, by whichever
    /// redemption (one at the same moment too), revokes the session that redemption started.
    async fn not_redeemed(
        &self,
        client: &AuthenticatedClient,
        hash: &[u8],
        presented: &CodeRedemption,
        now: DateTime<Utc>,
    ) -> Error {
        let (grant, user) = match self.codes.redeem(hash, now).await {
            Err(e) => return e,
            Ok(None) => return Error::InvalidGrant("unknown or expired code"),
            Ok(Some(Redeemed::Again { session })) => {
                return self.code_reused(client, session).await;
            }
            Ok(Some(Redeemed::Fresh { grant, user })) => (grant, user),
        };
        if grant.client_id != client.id {
            return Error::InvalidGrant("another client's code");
        }
        if grant.redirect_uri.is_some() && grant.redirect_uri != presented.redirect_uri {
            return Error::InvalidGrant("redirect_uri differs from the request's");
        }
        if !authorize::verifies(&presented.code_verifier, &grant.code_challenge) {
            return Error::InvalidGrant("code_verifier does not match");
        }
        // The user as they are now, who must be as they were when they signed in.
        if !user.is_some_and(|u| u.is_active && u.password_changed_at <= grant.auth_time) {
            return Error::InvalidGrant("the user changed since signing in");
        }
        Error::InvalidGrant("the user changed or signed out since signing in")
    }

    /// A code presented again, even at the same moment as its first redemption: the session that
    /// redemption started is revoked.
    async fn code_reused(&self, client: &AuthenticatedClient, session: Option<Uuid>) -> Error {
        if let Some(session) = session
            && let Err(e) = self.revoker.session(session, "code_reuse").await
        {
            return e;
        }
        tracing::warn!(client = %client.id, "authorization code presented twice");
        Error::InvalidGrant("code used twice")
    }
}
