//! Verifies this server's own access tokens: RS256 only, a known `kid`, `typ` `at+jwt`, the signature
//! (with the key's aws-lc-rs public key, parsed once with the key), and `iss`, `aud`, `exp`, `nbf` with
//! no leeway (the server issued them by its own clock).
//!
//! A resource server presents the same token on each of its user's requests, so a token that passed is
//! remembered by the SHA-256 of its exact bytes, and presented again it skips the RSA verification and
//! the parsing: only what can change is checked again (the clock against `exp` and `nbf`, its key still
//! published, and, in [`Verifier::check`], the deny list).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use quick_cache::sync::Cache;
use serde::{Deserialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{
    error::Error,
    keys::{Key, KeyStore},
    metrics::Metrics,
    ports::{Clock, DenyList, RevocationLog},
    value::claims::AccessClaims,
};

pub struct Verifier {
    keys: Arc<KeyStore>,
    deny_list: Arc<dyn DenyList>,
    /// The revocation log the deny list copies, for [`Verifier::check_durably`].
    log: Arc<dyn RevocationLog>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    issuer: String,
    audience: String,
    verified: Cache<[u8; 32], Arc<Verified>>,
}

/// A token whose signature and fixed claims passed.
struct Verified {
    kid: String,
    claims: AccessClaims,
}

/// Tokens longer than this are not looked at.
const MAX_TOKEN_LENGTH: usize = 8 * 1024;
/// How many verified tokens are remembered (about 400 bytes each); past it the least used are dropped.
const VERIFIED_CAPACITY: usize = 16 * 1024;

impl Verifier {
    pub fn new(
        keys: Arc<KeyStore>,
        deny_list: Arc<dyn DenyList>,
        log: Arc<dyn RevocationLog>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        issuer: &str,
        audience: &str,
    ) -> Self {
        Self {
            keys,
            deny_list,
            log,
            metrics,
            clock,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: Cache::new(VERIFIED_CAPACITY),
        }
    }

    /// [`Verifier::verify`], then the deny list: what Bearer routes and introspection accept. When the
    /// deny list cannot be read the answer is `503`, never a guess.
    pub async fn check(&self, token: &str) -> Result<AccessClaims, Error> {
        let claims = self.verify(token)?;
        let denied = self.deny_list.is_denied(&claims).await;
        let result = match &denied {
            Ok(false) => "allowed",
            Ok(true) => "denied",
            Err(_) => "error",
        };
        Metrics::count(&self.metrics.deny_lookups, result);
        if denied.is_err() {
            self.metrics.redis_errors.inc();
        }
        if denied? {
            return Err(Error::InvalidToken("revoked"));
        }
        Ok(claims)
    }

    /// [`Verifier::check`], except that while the deny list cannot be read the token is checked against
    /// the revocation log in the database, which the deny list copies: for requests that only take
    /// access away, which must be answered even during a Redis outage.
    pub async fn check_durably(&self, token: &str) -> Result<AccessClaims, Error> {
        match self.check(token).await {
            Err(Error::Unavailable { .. }) => {}
            other => return other,
        }
        let claims = self.verify(token)?;
        if self.log.denies(&claims).await? {
            return Err(Error::InvalidToken("revoked"));
        }
        Ok(claims)
    }

    /// Checks the signature and every claim; the deny list is the caller's second step.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, Error> {
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(Error::InvalidToken("too long"));
        }
        // A hit is only a shortcut: one that no longer holds is verified in full, which says why.
        let digest: [u8; 32] = Sha256::digest(token).into();
        if let Some(seen) = self.verified.get(&digest)
            && self.still_holds(&seen)
        {
            return Ok(seen.claims.clone());
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken("malformed"))?;
        // Pinned to RS256: a token that names `none` or HS256 is refused before any key is used, so a
        // public key can never be mistaken for an HMAC secret.
        if header.alg != Algorithm::RS256 {
            return Err(Error::InvalidToken("algorithm is not RS256"));
        }
        // RFC 9068 §4: an access token says so in its `typ`.
        if header.typ.as_deref() != Some("at+jwt") {
            return Err(Error::InvalidToken("typ is not at+jwt"));
        }
        let kid = header.kid.ok_or(Error::InvalidToken("no kid"))?;
        let keys = self.keys.current();
        let key = keys.find(&kid).ok_or(Error::InvalidToken("unknown kid"))?;
        let claims: AccessClaims = decode(token, key)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(Error::InvalidToken("issuer or audience"));
        }
        if !self.current(&claims) {
            return Err(Error::InvalidToken("expired or not yet valid"));
        }
        self.verified.insert(
            digest,
            Arc::new(Verified {
                kid,
                claims: claims.clone(),
            }),
        );
        Ok(claims)
    }

    /// An ID token this server issued, presented back as logout's `id_token_hint`: RS256, `typ` `JWT`,
    /// a published `kid`, the signature and `iss`. Its expiry is not checked: a hint is still a hint
    /// once expired (RP-Initiated Logout 1.0 §2), and it grants nothing but a logout without asking.
    pub fn id_token_hint(&self, token: &str) -> Result<IdTokenHint, Error> {
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(Error::InvalidToken("too long"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken("malformed"))?;
        if header.alg != Algorithm::RS256 || header.typ.as_deref() != Some("JWT") {
            return Err(Error::InvalidToken("not an RS256 ID token"));
        }
        let kid = header.kid.ok_or(Error::InvalidToken("no kid"))?;
        let keys = self.keys.current();
        let key = keys.find(&kid).ok_or(Error::InvalidToken("unknown kid"))?;
        let hint: IdTokenHint = decode(token, key)?;
        if hint.iss != self.issuer {
            return Err(Error::InvalidToken("issuer"));
        }
        Ok(hint)
    }

    /// What may have changed since a token was verified: the time, and whether its key is still
    /// published (a key removed from the folder stops verifying at the next rescan, remembered tokens
    /// included).
    fn still_holds(&self, seen: &Verified) -> bool {
        self.current(&seen.claims) && self.keys.current().find(&seen.kid).is_some()
    }

    /// Whether now lies within `nbf..=exp`, with no leeway: the server issued the token by this clock.
    fn current(&self, claims: &AccessClaims) -> bool {
        let now = self.clock.now().timestamp();
        claims.nbf <= now && now <= claims.exp
    }
}

/// What logout reads of an ID token: who it was issued for, to which client.
#[derive(Debug, Deserialize)]
pub struct IdTokenHint {
    pub iss: String,
    pub sub: String,
    pub aud: String,
}

/// The claims of `token` if `key` signed it: the RS256 signature over the JWS signing input (RFC 7515
/// §5.2), then the payload parsed as `T`, whose required fields must all be there. The header and what
/// the claims say are the caller's to check.
pub fn decode<T: DeserializeOwned>(token: &str, key: &Key) -> Result<T, Error> {
    let parts = token
        .rsplit_once('.')
        .and_then(|(signing_input, signature)| {
            let (_, payload) = signing_input.rsplit_once('.')?;
            Some((
                signing_input,
                URL_SAFE_NO_PAD.decode(signature).ok()?,
                payload,
            ))
        });
    let (signing_input, signature, payload) = parts.ok_or(Error::InvalidToken("malformed"))?;
    if !key.verifies(signing_input.as_bytes(), &signature) {
        return Err(Error::InvalidToken("signature"));
    }
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(Error::InvalidToken("claims"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::oauth::issuer;

    #[test]
    fn a_token_decodes_only_untampered_and_with_the_key_that_signed_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first) = crate::keys::generate(dir.path(), 2048).unwrap();
        let (_, second) = crate::keys::generate(dir.path(), 2048).unwrap();
        let store = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900)).unwrap();
        let set = store.current();
        let (signer, other) = (set.find(&first).unwrap(), set.find(&second).unwrap());
        let claims = |scope: &str| AccessClaims {
            iss: "https://issuer.example".into(),
            sub: "alice".into(),
            aud: "portcullis".into(),
            exp: 4_000_000_000,
            iat: 0,
            nbf: 0,
            jti: "j1".into(),
            client_id: "c1".into(),
            scope: scope.into(),
            sid: None,
            username: Some("alice".into()),
        };
        let token = issuer::encode(&claims("profile"), signer).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = issuer::encode(&claims("admin profile"), signer).unwrap();
        let forged_payload = forged_payload.split('.').nth(1).unwrap();
        let mut flipped = parts[2].as_bytes().to_vec();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();

        let outcome = |token: &str, key: &Key| match decode::<AccessClaims>(token, key) {
            Ok(got) => Ok(got.scope),
            Err(Error::InvalidToken(detail)) => Err(detail),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(outcome(&token, signer), Ok("profile".into()));
        let cases = [
            ("another key", token.clone(), other, "signature"),
            (
                "a swapped payload",
                format!("{}.{forged_payload}.{}", parts[0], parts[2]),
                signer,
                "signature",
            ),
            (
                "a flipped signature",
                format!("{}.{}.{flipped}", parts[0], parts[1]),
                signer,
                "signature",
            ),
            (
                "two parts",
                format!("{}.{}", parts[0], parts[1]),
                signer,
                "malformed",
            ),
            (
                "a signature that is not base64url",
                format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
                signer,
                "malformed",
            ),
        ];
        for (case, token, key, detail) in cases {
            assert_eq!(outcome(&token, key), Err(detail), "{case}");
        }
    }
}
