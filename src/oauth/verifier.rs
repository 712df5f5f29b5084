//! Verifies this server's own access tokens: RS256 only, a known `kid`, `typ` `at+jwt`, and `iss`,
//! `aud`, `exp`, `nbf` with no leeway (the server issued them by its own clock).
//!
//! A resource server presents the same token on each of its user's requests, so a token that passed is
//! remembered by the SHA-256 of its exact bytes, and presented again it skips the RSA verification and
//! the parsing: only what can change is checked again (the clock against `exp` and `nbf`, its key still
//! published, and, in [`Verifier::check`], the deny list).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::{
    error::Error,
    keys::KeyStore,
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
    validation: Validation,
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
        // Pinned to RS256: a token that names `none` or HS256 is refused before any key is used, so a
        // public key can never be mistaken for an HMAC secret.
        let mut validation = Validation::new(Algorithm::RS256);
        // The time is checked by [`Verifier::current`], against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]);
        Self {
            keys,
            deny_list,
            log,
            metrics,
            clock,
            validation,
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
        if header.alg != Algorithm::RS256 {
            return Err(Error::InvalidToken("algorithm is not RS256"));
        }
        // RFC 9068 §4: the library does not check `typ`, so it is checked here.
        if header.typ.as_deref() != Some("at+jwt") {
            return Err(Error::InvalidToken("typ is not at+jwt"));
        }
        let kid = header.kid.ok_or(Error::InvalidToken("no kid"))?;
        let keys = self.keys.current();
        let key = keys.find(&kid).ok_or(Error::InvalidToken("unknown kid"))?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "access token refused");
                Error::InvalidToken("signature or claims")
            })?;
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
