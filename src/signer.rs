//! jsonwebtoken's crypto provider, with one change: the RSA key pair is parsed once per key, not on every
//! signature. jsonwebtoken's own aws-lc-rs signer rebuilds an `RsaKeyPair` from the DER bytes on every
//! `encode`, which costs about a third of each signature (STACK.md §5, G1). Signing is still aws-lc-rs's
//! constant-time RSASSA-PKCS1-v1_5, called exactly as jsonwebtoken calls it; verification and every other
//! algorithm are jsonwebtoken's aws-lc-rs provider unchanged.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use jsonwebtoken::{
    Algorithm, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, aws_lc},
};
use sha2::{Digest, Sha256};

/// The provider to install at start-up (`PROVIDER.install_default()`).
pub static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory,
    ..aws_lc::DEFAULT_PROVIDER.clone()
});

/// Parsed key pairs by the SHA-256 of their DER encoding. Keys are few and rotate rarely; the map is
/// emptied if it ever holds more than a handful.
static KEY_PAIRS: LazyLock<Mutex<HashMap<[u8; 32], Arc<RsaKeyPair>>>> =
    LazyLock::new(Mutex::default);
const MAX_CACHED: usize = 16;

fn signer_factory(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::RS256 {
        return (aws_lc::DEFAULT_PROVIDER.signer_factory)(algorithm, key);
    }
    let id: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut cache = KEY_PAIRS.lock().expect("key pair cache lock");
    let pair = match cache.get(&id) {
        Some(pair) => pair.clone(),
        None => {
            let pair = Arc::new(RsaKeyPair::from_der(key.as_bytes()).map_err(|_| {
                jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidRsaKey(
                    "not an RSA private key".into(),
                ))
            })?);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id, pair.clone());
            pair
        }
    };
    Ok(Box::new(Rs256Signer(pair)))
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
        let public = DecodingKey::from_rsa_pem(
            rsa::pkcs8::EncodePublicKey::to_public_key_pem(
                &rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(std::str::from_utf8(&pem).unwrap())
                    .map(|k: rsa::RsaPrivateKey| k.to_public_key())
                    .unwrap(),
                rsa::pkcs8::LineEnding::LF,
            )
            .unwrap()
            .as_bytes(),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &public, &validation).is_ok());
    }
}
