//! `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662).

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde::Deserialize;

use super::{Tag, client_auth, form::StrictForm};
use crate::{
    error::Error,
    http::error::{ClientEndpointErrors, Failure},
    oauth::client::{AuthenticatedClient, Lookup},
    state::AppState,
};

/// A token to revoke or introspect.
#[derive(Object, Deserialize)]
pub struct TokenLookupForm {
    /// An access token or a refresh token.
    #[oai(write_only)]
    token: Option<String>,
    /// `access_token` or `refresh_token`; a hint only, every kind is looked for.
    #[allow(dead_code)] // RFC 7009 §2.1 lets the server ignore it; it is here for the document
    token_type_hint: Option<String>,
    client_id: Option<String>,
    #[oai(write_only)]
    client_secret: Option<String>,
}

/// RFC 7662 §2.2. Only `active` when the token is not live.
#[derive(Object, Default)]
pub struct Introspection {
    active: bool,
    #[oai(skip_serializing_if_is_none)]
    scope: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    client_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    username: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    token_type: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    exp: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    iat: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    nbf: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    sub: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    aud: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    iss: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    jti: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    sid: Option<String>,
}

#[derive(ApiResponse)]
enum Revoked {
    /// Revoked, or nothing to revoke: RFC 7009 answers alike for unknown and malformed tokens.
    #[oai(status = 200)]
    Ok,
}

#[derive(Default)]
pub struct RevokeApi;

#[OpenApi]
impl RevokeApi {
    /// Revoke a token
    ///
    /// Revoking a refresh token revokes its session (every refresh and access token of that login);
    /// revoking an access token denies it until it expires. Only the client a token was issued to can
    /// revoke it; another client's token is left untouched.
    #[oai(path = "/oauth/revoke", method = "post", tag = "Tag::OAuth")]
    async fn revoke(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        form: StrictForm<TokenLookupForm>,
    ) -> Result<Revoked, Failure<ClientEndpointErrors>> {
        let (client, token) = authenticate(&state, req, form.0, Lookup::Fresh).await?;
        state.tokens.revoke(&client, &token).await?;
        Ok(Revoked::Ok)
    }

    /// Introspect a token
    ///
    /// For resource servers (confidential clients only). `active` is true only for a live access token
    /// that passed every check, including the deny list; if the deny list cannot be read the answer is
    /// `503`, never a guess.
    #[oai(path = "/oauth/introspect", method = "post", tag = "Tag::OAuth")]
    async fn introspect(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        form: StrictForm<TokenLookupForm>,
    ) -> Result<Json<Introspection>, Failure<ClientEndpointErrors>> {
        let basic = req.headers().contains_key("authorization");
        let (client, token) = authenticate(&state, req, form.0, Lookup::Recent).await?;
        if client.is_public {
            return Err(Error::InvalidClient {
                basic,
                detail: "introspection needs a confidential client",
            }
            .into());
        }
        let Some(claims) = state.tokens.introspect(&token).await? else {
            return Ok(Json(Introspection::default()));
        };
        Ok(Json(Introspection {
            active: true,
            scope: Some(claims.scope),
            client_id: Some(claims.client_id),
            username: claims.username,
            token_type: Some("Bearer".into()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            nbf: Some(claims.nbf),
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            jti: Some(claims.jti),
            sid: claims.sid,
        }))
    }
}

async fn authenticate(
    state: &AppState,
    req: &Request,
    form: TokenLookupForm,
    lookup: Lookup,
) -> Result<(AuthenticatedClient, String), Error> {
    let presented = client_auth::presented(req, form.client_id, form.client_secret)?;
    let token = form
        .token
        .ok_or_else(|| Error::invalid_request("missing parameter: token"))?;
    let client = client_auth::authenticate(state, presented, lookup).await?;
    Ok((client, token))
}
