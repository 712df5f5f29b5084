//! The strong entity tag (RFC 9110 §8.8.3) of a document served as prepared bytes: the JWKS and the
//! revocation feed.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// The ETag of `body`: its SHA-256, base64url, quoted. It depends on the bytes alone, so instances that
/// serve the same bytes agree on it.
pub fn of(body: &[u8]) -> String {
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_etag_is_the_quoted_base64url_sha256_of_the_bytes() {
        // SHA-256 of nothing is e3b0c442…b855 (FIPS 180-4 test vectors).
        assert_eq!(
            super::of(b""),
            "\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\""
        );
        assert_ne!(super::of(b"{}"), super::of(b"{} "));
    }
}
