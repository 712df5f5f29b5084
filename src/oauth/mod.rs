//! The OAuth domain: parsed requests, client authentication, the grants, and the access-token format.
//! Nothing here knows HTTP; grants take parsed values and return domain values or [`crate::error::Error`].

pub mod authorize;
pub mod client;
pub mod grant;
pub mod issuer;
pub mod login;
pub mod logout;
pub mod metadata;
pub mod refresh;
pub mod revocation;
pub mod secret;
pub mod tokens;
pub mod userinfo;
pub mod verifier;
