//! Opaque secrets the server hands out (refresh tokens, authorization codes, sign-in cookies, anti-CSRF
//! values, generated client secrets): 256 random bits, base64url, and stored only as their SHA-256. They
//! are random, so a fast hash keeps a stolen table useless, and it can be compared in constant time.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The length of [`generate`]'s output.
pub const LENGTH: usize = 43;

/// A new secret.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database holds instead of the secret; looking one up is by this hash only.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}
