//! The opaque refresh-token format: a [`crate::oauth::secret`], stored only as its hash.
//!
//! A token's successor is not random but `HMAC-SHA256(server secret, token)`: a client retrying a
//! rotation within `refresh.reuse_grace` can be handed the same successor again without the server
//! ever storing it in plaintext.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Refresh tokens are 43 characters; anything much longer is not one and is not hashed.
pub const MAX_LENGTH: usize = 512;

pub struct RefreshTokens {
    successor_key: Vec<u8>,
}

impl RefreshTokens {
    pub fn new(successor_key: Vec<u8>) -> Self {
        Self { successor_key }
    }

    /// The token that replaces `presented` when it is rotated.
    pub fn successor(&self, presented: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.successor_key)
            .expect("HMAC takes a key of any length");
        mac.update(b"portcullis refresh successor\0");
        mac.update(presented.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_successors_are_stable_per_key() {
        let token = crate::oauth::secret::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert_ne!(token, crate::oauth::secret::generate());
        let a = RefreshTokens::new(vec![1; 32]);
        let b = RefreshTokens::new(vec![2; 32]);
        assert_eq!(a.successor(&token), a.successor(&token));
        assert_ne!(a.successor(&token), b.successor(&token));
        assert_ne!(a.successor(&token), token);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(a.successor(&token)).unwrap().len(),
            32
        );
    }
}
