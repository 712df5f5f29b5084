//! Authorization server metadata (RFC 8414), built once from configuration. The same document answers at
//! `/.well-known/openid-configuration`, with the fields resource-server libraries that only look there
//! require.

use serde::Serialize;

/// The RFC 8414 metadata document.
#[derive(Serialize)]
pub struct Metadata {
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<&'static str>,
    service_documentation: String,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    /// Not in RFC 8414: where resource servers that verify locally learn of revocations.
    revocation_feed_endpoint: String,
}

impl Metadata {
    /// The document of the server at `issuer` (no trailing slash) whose default client holds `scopes`.
    pub fn new(issuer: &str, scopes: &[String]) -> Self {
        let url = |path: &str| format!("{issuer}{path}");
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        Self {
            issuer: issuer.to_owned(),
            token_endpoint: url("/oauth/token"),
            jwks_uri: url("/.well-known/jwks.json"),
            revocation_endpoint: url("/oauth/revoke"),
            introspection_endpoint: url("/oauth/introspect"),
            grant_types_supported: vec!["password", "refresh_token", "client_credentials"],
            token_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            revocation_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            introspection_endpoint_auth_methods_supported: vec![
                "client_secret_basic",
                "client_secret_post",
            ],
            scopes_supported: scopes,
            // There is no authorization endpoint, so no response type is supported.
            response_types_supported: vec![],
            service_documentation: url("/docs"),
            // OpenID discovery requires these; the server issues no ID tokens, only RS256 access tokens.
            subject_types_supported: vec!["public"],
            id_token_signing_alg_values_supported: vec!["RS256"],
            revocation_feed_endpoint: url("/oauth/revocations"),
        }
    }
}
