//! Signs access tokens: RFC 9068 JWTs, RS256, with the signing key's aws-lc-rs key pair.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use sha2::Digest;
use uuid::Uuid;

use crate::{
    error::Error,
    keys::{Key, KeyStore},
    oauth::userinfo::UserClaims,
    ports::Clock,
    value::{account::User, claims::AccessClaims, scope::Scope},
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
    id_ttl: Duration,
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
        id_ttl: Duration,
    ) -> Self {
        Self {
            keys,
            clock,
            issuer,
            audience,
            ttl,
            id_ttl,
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
        let token = encode(&claims, self.keys.current().signing())?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl.as_secs(),
            claims,
        })
    }

    /// An OpenID Connect ID token (Core §2, §3.1.3.6) for `user`, issued beside `access`: `aud` is the
    /// client, `sid` the session, `at_hash` binds the access token, and the claims of the `profile` and
    /// `email` scopes are there only when those scopes were granted and the user has a value.
    pub fn id_token(
        &self,
        user: &User,
        signed_in: &SignedIn<'_>,
        access: &AccessToken,
    ) -> Result<String, Error> {
        let now = self.clock.now().timestamp();
        let scope = Scope::parse(&access.claims.scope).unwrap_or_default();
        let digest = sha2::Sha256::digest(access.token.as_bytes());
        let claims = IdClaims {
            iss: &self.issuer,
            aud: &access.claims.client_id,
            exp: now + self.id_ttl.as_secs() as i64,
            iat: now,
            auth_time: signed_in.auth_time.timestamp(),
            nonce: signed_in.nonce,
            sid: access.claims.sid.as_deref(),
            at_hash: URL_SAFE_NO_PAD.encode(&digest[..16]),
            user: UserClaims::of(user, &scope),
        };
        jws("JWT", &claims, self.keys.current().signing())
    }
}

/// What an ID token says of how the user signed in.
pub struct SignedIn<'a> {
    pub auth_time: chrono::DateTime<chrono::Utc>,
    pub nonce: Option<&'a str>,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    at_hash: String,
    /// `sub` and the claims of the scope.
    #[serde(flatten)]
    user: UserClaims,
}

/// `claims` as an access token signed by `key`: a JWT in the JWS compact serialisation (RFC 7515 §7.1),
/// `typ` `at+jwt`, RS256, the key's `kid`. The bytes are what `jsonwebtoken::encode` gives; the signature
/// is made with the key pair parsed when the key was read, not parsed again per token.
pub fn encode(claims: &impl Serialize, key: &Key) -> Result<String, Error> {
    jws("at+jwt", claims, key)
}

/// `claims` signed by `key` as a JWS of type `typ`, RS256, the key's `kid`.
fn jws(typ: &str, claims: &impl Serialize, key: &Key) -> Result<String, Error> {
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some(typ.into());
    header.kid = Some(key.kid.clone());
    let mut token = base64_json(&header)?;
    token.push('.');
    token.push_str(&base64_json(claims)?);
    let signature = key
        .sign(token.as_bytes())
        .map_err(|e| Error::Internal(anyhow::anyhow!("signing a token: {e}")))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// One part of a JWS: the JSON of `value`, base64url without padding (RFC 7515 §2).
fn base64_json(value: &impl Serialize) -> Result<String, Error> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Internal(e.into()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, EncodingKey, Validation, jwk::Jwk};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_token_is_what_jsonwebtoken_encodes_and_verifies_with_the_published_key() {
        let dir = tempfile::tempdir().unwrap();
        let (path, kid) = crate::keys::generate(dir.path(), 2048).unwrap();
        let store = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900)).unwrap();
        let set = store.current();
        let claims = json!({"sub": "a", "exp": 4_000_000_000u64, "scope": "profile"});

        let ours = encode(&claims, set.signing()).unwrap();

        // RSASSA-PKCS1-v1_5 is deterministic, so jsonwebtoken's own encoding must match byte for byte.
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.clone());
        let encoding = EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap();
        let theirs = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        assert_eq!(ours, theirs);
        // And jsonwebtoken verifies it with the key as the JWKS publishes it.
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &ours,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, claims);
    }
}
