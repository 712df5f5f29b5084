//! jsonwebtoken's crypto provider, with one change: RSA keys are parsed once per key, not on every token.
//! jsonwebtoken's own aws-lc-rs provider rebuilds an `RsaKeyPair` from the DER bytes on every `encode`,
//! a large share of each signature, and an aws-lc public key from the DER on every `decode`. Signing and verifying are still aws-lc-rs's RSASSA-PKCS1-v1_5, called exactly as
//! jsonwebtoken calls it; jsonwebtoken still parses the token, pins the algorithm and checks every claim,
//! and every other algorithm and key form is its aws-lc-rs provider unchanged.

use std::sync::{Arc, LazyLock, RwLock};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, DecodingKeyKind, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, aws_lc},
    errors::{Error, ErrorKind},
};
use sha2::{Digest, Sha256};

/// The provider to install at start-up (`PROVIDER.install_default()`).
pub static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory,
    verifier_factory,
    ..aws_lc::DEFAULT_PROVIDER.clone()
});

static KEY_PAIRS: Parsed<RsaKeyPair> = Parsed::new();
static PUBLIC_KEYS: Parsed<ParsedPublicKey> = Parsed::new();

/// Parsed keys by the SHA-256 of their DER encoding. Keys are few and rotate rarely; the cache is emptied
/// if it ever holds more than a handful.
struct Parsed<T>(RwLock<Vec<([u8; 32], Arc<T>)>>);

const MAX_CACHED: usize = 16;

impl<T> Parsed<T> {
    const fn new() -> Self {
        Self(RwLock::new(Vec::new()))
    }

    fn get_or_parse(&self, der: &[u8], parse: impl FnOnce(&[u8]) -> Option<T>) -> Option<Arc<T>> {
        let id: [u8; 32] = Sha256::digest(der).into();
        let cached = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, key)) = cached.iter().find(|(k, _)| *k == id) {
            return Some(key.clone());
        }
        drop(cached);
        let key = Arc::new(parse(der)?);
        let mut cache = self.0.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.push((id, key.clone()));
        Some(key)
    }
}

/// Builds the RS256 signer for `key` and signs once, as every token is signed: a key that passes here
/// cannot fail a token request later, and its parsed form is cached already.
pub fn check_signs(key: &EncodingKey) -> anyhow::Result<()> {
    signer_factory(&Algorithm::RS256, key)?
        .try_sign(b"portcullis key check")
        .map_err(|e| anyhow::anyhow!("signing failed: {e}"))?;
    Ok(())
}

fn signer_factory(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::RS256 {
        return (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    let pair = KEY_PAIRS
        .get_or_parse(key.as_bytes(), |der| RsaKeyPair::from_der(der).ok())
        .ok_or_else(|| Error::from(ErrorKind::InvalidRsaKey("not an RSA private key".into())))?;
    Ok(Box::new(Rs256Signer(pair)))
}

fn verifier_factory(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    // Only a DER public key (what the key store builds) is cached; the rest goes the stock way.
    let (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) = (algorithm, key.kind()) else {
        return (aws_lc::DEFAULT_PROVIDER.verifier_factory)(algorithm, key);
    };
    let public = PUBLIC_KEYS
        .get_or_parse(der, |der| {
            ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()
        })
        .ok_or_else(|| Error::from(ErrorKind::InvalidKeyFormat))?;
    Ok(Box::new(Rs256Verifier(public)))
}

struct Rs256Signer(Arc<RsaKeyPair>);

impl signature::Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut signature = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut signature)
            .map_err(signature::Error::from_source)?;
        Ok(signature)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

struct Rs256Verifier(Arc<ParsedPublicKey>);

impl signature::Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        self.0
            .verify_sig(msg, signature)
            .map_err(signature::Error::from_source)
    }
}

impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Header, Validation};

    use super::*;

    #[test]
    fn a_cached_signature_verifies_with_jsonwebtoken_and_matches_the_stock_signer() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = crate::keys::generate(dir.path(), 2048).unwrap();
        let pem = std::fs::read(path).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        let message = b"header.payload";
        // RSASSA-PKCS1-v1_5 is deterministic: the cached signer must give the stock signer's bytes.
        let ours = (PROVIDER.signer_factory)(&Algorithm::RS256, &key)
            .unwrap()
            .try_sign(message)
            .unwrap();
        let again = (PROVIDER.signer_factory)(&Algorithm::RS256, &key)
            .unwrap()
            .try_sign(message)
            .unwrap();
        let stock = (aws_lc::DEFAULT_PROVIDER.signer_factory)(&Algorithm::RS256, &key)
            .unwrap()
            .try_sign(message)
            .unwrap();
        assert_eq!(ours, stock);
        assert_eq!(ours, again);
        // And a whole token verifies through jsonwebtoken's verifier.
        let claims = serde_json::json!({"sub": "a", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        let private =
            rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(std::str::from_utf8(&pem).unwrap())
                .unwrap();
        let public = crate::keys::decoding_key(&private).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &public, &validation).is_ok());
    }

    #[test]
    fn the_cached_verifier_accepts_exactly_what_the_stock_verifier_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<(EncodingKey, DecodingKey)> = (0..2)
            .map(|_| {
                let (path, _) = crate::keys::generate(dir.path(), 2048).unwrap();
                let pem = std::fs::read_to_string(path).unwrap();
                let private = rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&pem).unwrap();
                (
                    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
                    crate::keys::decoding_key(&private).unwrap(),
                )
            })
            .collect();
        let message = b"header.payload";
        let signatures: Vec<Vec<u8>> = keys
            .iter()
            .map(|(e, _)| {
                (PROVIDER.signer_factory)(&Algorithm::RS256, e)
                    .unwrap()
                    .try_sign(message)
                    .unwrap()
            })
            .collect();
        let mut tampered = signatures[0].clone();
        tampered[7] ^= 1;
        let cases = [
            (&keys[0].1, message.as_slice(), &signatures[0], true),
            (&keys[1].1, message.as_slice(), &signatures[1], true),
            // Each key's parsed form is its own: the other key's signature fails.
            (&keys[0].1, message.as_slice(), &signatures[1], false),
            (&keys[1].1, message.as_slice(), &signatures[0], false),
            (&keys[0].1, message.as_slice(), &tampered, false),
            (
                &keys[0].1,
                b"header.payloaD".as_slice(),
                &signatures[0],
                false,
            ),
        ];
        for (key, message, signature, valid) in cases {
            let stock = (aws_lc::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::RS256, key)
                .unwrap()
                .verify(message, signature)
                .is_ok();
            let ours = (PROVIDER.verifier_factory)(&Algorithm::RS256, key)
                .unwrap()
                .verify(message, signature)
                .is_ok();
            assert_eq!((stock, ours), (valid, valid));
        }
        // And the key store's keys are the ones kept parsed.
        let DecodingKeyKind::SecretOrDer(der) = keys[0].1.kind() else {
            panic!("the key store builds DER keys")
        };
        let id: [u8; 32] = Sha256::digest(der).into();
        let cached = PUBLIC_KEYS.0.read().unwrap();
        assert!(cached.iter().any(|(k, _)| *k == id));
    }
}
