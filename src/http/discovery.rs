//! `GET /.well-known/jwks.json` (RFC 7517): the key store's bytes, serialised once per key set, with a
//! strong ETag and a `Cache-Control` lifetime so that resource servers cache them.

use std::{marker::PhantomData, sync::Arc};

use poem::{
    Request, Response,
    http::{HeaderValue, StatusCode, header},
    web::Data,
};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::Payload,
    registry::{MetaResponses, MetaSchemaRef, Registry},
    types::Type,
};

use super::Tag;
use crate::state::AppState;

// The documents below describe, for the OpenAPI document only, what `keys::Jwks` and
// `oauth::metadata::Metadata` serialise; the conformance test (tests/api/openapi_conformance.rs) fails when
// the two drift apart, so the domain need not know poem-openapi.

/// One RSA public key (RFC 7517 §4, RFC 7518 §6.3).
#[derive(Object)]
#[allow(dead_code)]
struct JwkDoc {
    /// `RSA`.
    kty: String,
    /// `sig`.
    #[oai(rename = "use")]
    use_: String,
    /// `RS256`.
    alg: String,
    /// The RFC 7638 thumbprint of the key.
    kid: String,
    /// Modulus, base64url.
    n: String,
    /// Exponent, base64url.
    e: String,
}

/// Every key that may have signed a live token, plus the next key once it is pre-published.
#[derive(Object)]
#[allow(dead_code)]
struct JwksDoc {
    keys: Vec<JwkDoc>,
}

/// JSON that was serialised once, described by the schema `T`.
pub struct PreRendered<T>(bytes::Bytes, PhantomData<T>);

impl<T> PreRendered<T> {
    pub fn new(bytes: bytes::Bytes) -> Self {
        Self(bytes, PhantomData)
    }
}

impl<T: Type> Payload for PreRendered<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> poem::IntoResponse for PreRendered<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, JSON)
            .body(poem::Body::from_bytes(self.0))
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A response put together from values prepared once, documented as the response type `R`: the
/// discovery documents are answered this way, by their operations and (the JWKS) by the edge alike.
struct Described<R>(Response, PhantomData<R>);

impl<R: ApiResponse> ApiResponse for Described<R> {
    fn meta() -> MetaResponses {
        R::meta()
    }

    fn register(registry: &mut Registry) {
        R::register(registry);
    }
}

impl<R: Send> poem::IntoResponse for Described<R> {
    fn into_response(self) -> Response {
        self.0
    }
}

/// What the JWKS operation answers, as documented; [`jwks_answer`] puts it together.
#[derive(ApiResponse)]
#[allow(dead_code)]
enum JwksResponse {
    /// The key set.
    #[oai(status = 200)]
    Ok(
        PreRendered<JwksDoc>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The client's copy (its `If-None-Match`) is current.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// RFC 8414 authorization server metadata.
#[derive(Object)]
#[allow(dead_code)]
struct MetadataDoc {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    /// OpenID Connect: `GET|POST /oauth/userinfo`.
    userinfo_endpoint: String,
    /// OpenID Connect RP-Initiated Logout: `GET|POST /oauth/logout`.
    end_session_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<String>,
    response_modes_supported: Vec<String>,
    code_challenge_methods_supported: Vec<String>,
    /// RFC 9207: every authorization response carries `iss`.
    authorization_response_iss_parameter_supported: bool,
    claims_supported: Vec<String>,
    service_documentation: String,
    subject_types_supported: Vec<String>,
    id_token_signing_alg_values_supported: Vec<String>,
    /// Not in RFC 8414: the revocation feed (`GET /oauth/revocations`).
    revocation_feed_endpoint: String,
}

/// What the metadata operations answer, as documented; [`metadata`] puts it together.
#[derive(ApiResponse)]
#[allow(dead_code)]
enum MetadataResponse {
    /// The metadata; it changes only with the configuration.
    #[oai(status = 200)]
    Ok(
        PreRendered<MetadataDoc>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(Default)]
pub struct DiscoveryApi;

#[OpenApi]
impl DiscoveryApi {
    /// Authorization server metadata (RFC 8414)
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        tag = "Tag::Discovery"
    )]
    async fn oauth_metadata(&self, state: Data<&Arc<AppState>>) -> Described<MetadataResponse> {
        metadata(&state)
    }

    /// The same metadata, where OpenID Connect discovery looks
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        tag = "Tag::Discovery"
    )]
    async fn openid_configuration(
        &self,
        state: Data<&Arc<AppState>>,
    ) -> Described<MetadataResponse> {
        metadata(&state)
    }

    /// The JSON Web Key Set
    ///
    /// The public keys that verify this server's access tokens. Cache it as `Cache-Control` says;
    /// refetch it when a token names a `kid` you do not know.
    #[oai(
        path = "/.well-known/jwks.json",
        method = "get",
        tag = "Tag::Discovery"
    )]
    async fn jwks(&self, state: Data<&Arc<AppState>>, req: &Request) -> Described<JwksResponse> {
        Described(jwks_answer(&state, req), PhantomData)
    }
}

/// Whether `If-None-Match` names `etag` (weakly, as RFC 9110 §13.1.2 compares for it) or is `*`: then a
/// `GET` answers `304`.
pub(super) fn none_match(headers: &http::HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// The JWKS, or `304` when the client's `If-None-Match` names the current key set. The edge answers a
/// `GET` with it directly, without poem-openapi's routing layers, on the path every resource server polls
/// (`super::Edge`).
pub(super) fn jwks_answer(state: &AppState, req: &Request) -> Response {
    let keys = state.keys.current();
    let etag = keys.etag();
    let matches = none_match(req.headers(), etag);
    let answer = Response::builder()
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, state.discovery_cache_control.clone());
    if matches {
        answer.status(StatusCode::NOT_MODIFIED).finish()
    } else {
        answer
            .header(header::CONTENT_TYPE, JSON)
            .body(keys.jwks().clone())
    }
}

fn metadata(state: &AppState) -> Described<MetadataResponse> {
    let answer = Response::builder()
        .header(header::CACHE_CONTROL, state.discovery_cache_control.clone())
        .header(header::CONTENT_TYPE, JSON)
        .body(state.metadata.clone());
    Described(answer, PhantomData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_names_the_tag_in_a_list_weakly_or_as_a_star() {
        let with = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(header::IF_NONE_MATCH, v.parse().unwrap());
            }
            none_match(&headers, "\"abc\"")
        };
        assert!(with(&["\"abc\""]));
        assert!(with(&["\"x\", W/\"abc\""]));
        assert!(with(&["\"x\"", "\"abc\""]));
        assert!(with(&["*"]));
        assert!(!with(&["\"abd\""]));
        assert!(!with(&[]));
    }
}
