//! Portcullis, an OAuth 2.0 authorization server.
//!
//! Requests flow one way, edge → domain → storage, and back as values:
//!
//! - [`http`]: the only module that knows poem and poem-openapi. It parses forms, headers and bodies
//!   into domain values and renders results; [`error`] renders every failure (RFC 6749 / RFC 6750).
//! - [`oauth`]: the domain. Client authentication, one module per grant, the access-token format
//!   ([`oauth::issuer`], [`oauth::verifier`]); it returns [`error::Error`] and never sees HTTP.
//! - [`value`]: leaf value types (scopes, usernames, grant types, access-token claims) that the domain,
//!   storage and the edge all use, so that none imports another for a value.
//! - [`accounts`]: account flows shared by the API and the command line (registration).
//! - [`store`]: persistence through sea-orm ([`entity`] holds the tables; `migration/` their history).
//! - [`keys`]: the signing keys in `keys.dir` and the JWKS built once from them.
//! - [`password`]: the password policy and argon2id on a bounded blocking pool.
//! - [`config`], [`state`], [`startup`], [`telemetry`]: settings, the shared services, wiring, logs.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod entity;
pub mod error;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod password;
pub mod ratelimit;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod value;
