//! Signs access tokens: RFC 9068 JWTs, RS256 through jsonwebtoken's aws-lc-rs backend.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use crate::{
    error::Error,
    keys::KeyStore,
    ports::Clock,
    value::{claims::AccessClaims, scope::Scope},
};

/// Who a token is for: a user's session, or a client acting for itself.
pub enum Subject<'a> {
    User {
        id: Uuid,
        username: &'a str,
        session: Uuid,
    },
    Client,
}

pub struct Issuer {
    keys: Arc<KeyStore>,
    clock: Arc<dyn Clock>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A signed access token and what a response says of it.
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
    pub claims: AccessClaims,
}

impl Issuer {
    pub fn new(
        keys: Arc<KeyStore>,
        clock: Arc<dyn Clock>,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Self {
        Self {
            keys,
            clock,
            issuer,
            audience,
            ttl,
        }
    }

    pub fn access_token(
        &self,
        subject: Subject<'_>,
        client_id: &str,
        scope: &Scope,
    ) -> Result<AccessToken, Error> {
        let now = self.clock.now().timestamp();
        let (sub, sid, username) = match subject {
            Subject::User {
                id,
                username,
                session,
            } => (
                id.to_string(),
                Some(session.to_string()),
                Some(username.to_owned()),
            ),
            Subject::Client => (client_id.to_owned(), None, None),
        };
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub,
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs() as i64,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            client_id: client_id.to_owned(),
            scope: scope.to_string(),
            sid,
            username,
        };
        let keys = self.keys.current();
        let key = keys.signing();
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| Error::Internal(anyhow::anyhow!("signing an access token: {e}")))?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl.as_secs(),
            claims,
        })
    }
}
