//! Authorization server metadata (RFC 8414), built once from configuration. The same document answers at
//! `/.well-known/openid-configuration`, with the fields resource-server libraries that only look there
//! require.

use serde::Serialize;

/// The RFC 8414 metadata document.
#[derive(Serialize)]
pub struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    end_session_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<&'static str>,
    response_modes_supported: Vec<&'static str>,
    code_challenge_methods_supported: Vec<&'static str>,
    authorization_response_iss_parameter_supported: bool,
    claims_supported: Vec<&'static str>,
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
        scopes.extend(["openid", "profile", "email"].map(String::from));
        scopes.sort();
        scopes.dedup();
        Self {
            issuer: issuer.to_owned(),
            authorization_endpoint: url("/oauth/authorize"),
            token_endpoint: url("/oauth/token"),
            userinfo_endpoint: url("/oauth/userinfo"),
            end_session_endpoint: url("/oauth/logout"),
            jwks_uri: url("/.well-known/jwks.json"),
            revocation_endpoint: url("/oauth/revoke"),
            introspection_endpoint: url("/oauth/introspect"),
            grant_types_supported: vec![
                "authorization_code",
                "password",
                "refresh_token",
                "client_credentials",
            ],
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
            response_types_supported: vec!["code"],
            response_modes_supported: vec!["query"],
            // PKCE is required of every client, and only with S256.
            code_challenge_methods_supported: vec!["S256"],
            authorization_response_iss_parameter_supported: true,
            claims_supported: vec![
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "sid",
                "at_hash",
                "preferred_username",
                "email",
                "email_verified",
            ],
            service_documentation: url("/docs"),
            subject_types_supported: vec!["public"],
            id_token_signing_alg_values_supported: vec!["RS256"],
            revocation_feed_endpoint: url("/oauth/revocations"),
        }
    }
}
