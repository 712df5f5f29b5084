//! Reads what a request presents to identify its client: HTTP Basic (RFC 6749 §2.3.1, id and secret
//! form-urlencoded inside), or `client_id`/`client_secret` in the body. Checking them is the domain's.

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{Request, http::header};

use super::form::storable;
use crate::{
    error::Error,
    oauth::client::{self, AuthenticatedClient, Lookup, MAX_ID, MAX_SECRET, Presented},
    state::AppState,
};

/// Authenticates what a request presented against this server's clients, a request with no client at all
/// being the default public client's; the request's log line names the client from here on.
pub async fn authenticate(
    state: &AppState,
    presented: Presented,
    lookup: Lookup,
) -> Result<AuthenticatedClient, Error> {
    let client = client::authenticate(
        state.clients.as_ref(),
        presented,
        &state.settings.clients.default_client_id,
        lookup,
    )
    .await?;
    tracing::Span::current().record("client_id", client.id.as_str());
    Ok(client)
}

pub fn presented(
    req: &Request,
    form_id: Option<String>,
    form_secret: Option<String>,
) -> Result<Presented, Error> {
    let basic = basic_credentials(req)?;
    if form_id.as_ref().is_some_and(|id| id.len() > MAX_ID)
        || form_secret.as_ref().is_some_and(|s| s.len() > MAX_SECRET)
    {
        return Err(Error::invalid_request(
            "client_id or client_secret is too long",
        ));
    }
    match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => Err(Error::invalid_request(
            "more than one client authentication method",
        )),
        (Some((id, _)), Some(form_id), None) if form_id != id => Err(Error::invalid_request(
            "client_id does not match the HTTP Basic credentials",
        )),
        (Some((id, secret)), _, None) => Ok(Presented::Basic { id, secret }),
        (None, Some(id), Some(secret)) => Ok(Presented::Post { id, secret }),
        (None, None, Some(_)) => Err(Error::invalid_request("client_secret without client_id")),
        (None, Some(id), None) => Ok(Presented::IdOnly(id)),
        (None, None, None) => Ok(Presented::Nothing),
    }
}

/// The Basic credentials, if any. `Basic Og==` (an empty id and secret, which Swagger UI sends when its
/// client fields are empty) counts as none; any other header that is not valid Basic is refused rather
/// than taken for no client, which would make its request the default client's.
fn basic_credentials(req: &Request) -> Result<Option<(String, String)>, Error> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let refuse = |detail| Error::InvalidClient {
        basic: true,
        detail,
    };
    let value = value
        .to_str()
        .map_err(|_| refuse("authorization header is not ASCII"))?;
    let Some((_, encoded)) = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
    else {
        return Err(refuse("authorization header is not HTTP Basic"));
    };
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| refuse("malformed basic credentials"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| refuse("malformed basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or(refuse("malformed basic credentials"))?;
    let unescape = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| refuse("malformed basic credentials"))
    };
    let (id, secret) = (unescape(id)?, unescape(secret)?);
    if id.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    if id.is_empty()
        || id.len() > MAX_ID
        || secret.len() > MAX_SECRET
        || !storable(&id)
        || !storable(&secret)
    {
        return Err(refuse("malformed basic credentials"));
    }
    Ok(Some((id, secret)))
}
