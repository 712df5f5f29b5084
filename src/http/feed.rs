//! `GET /oauth/revocations`: the revocation feed, for resource servers that verify tokens locally and
//! still want to honour revocations within seconds, without introspecting every request.

use std::sync::Arc;

use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Query};
use serde::Serialize;

use super::{
    Tag, client_auth,
    discovery::{PreRendered, none_match},
};
use crate::{
    error::Error,
    http::error::{Failure, FeedErrors},
    oauth::client::{self, Presented},
    state::AppState,
    value::etag,
};

/// One revocation.
#[derive(Object, Serialize)]
struct FeedEntry {
    /// `jti`: one access token; `sid`: every token of a session; `sub`: every token of the subject issued
    /// before `not_before`.
    kind: String,
    value: String,
    /// For `sub`: seconds since the epoch; tokens with an earlier `iat` are revoked.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<i64>,
    /// Seconds since the epoch after which no token it concerns is live; forget it then.
    expires_at: i64,
}

#[derive(Object, Serialize)]
struct Feed {
    /// Pass it as `since` next time.
    cursor: String,
    entries: Vec<FeedEntry>,
}

#[derive(ApiResponse)]
enum FeedResponse {
    /// The entries added after `since` (every live entry without it) that can still matter.
    #[oai(status = 200)]
    Ok(PreRendered<Feed>, #[oai(header = "ETag")] String),
    /// Nothing changed since the `If-None-Match` copy.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(Default)]
pub struct FeedApi;

#[OpenApi]
impl FeedApi {
    /// The revocation feed
    ///
    /// For confidential clients (HTTP Basic). Poll it every few seconds with the last `cursor`; an unknown
    /// or too old cursor answers the full live set. Entries leave once their tokens have expired.
    #[oai(path = "/oauth/revocations", method = "get", tag = "Tag::OAuth")]
    async fn revocations(
        &self,
        state: Data<&Arc<AppState>>,
        req: &Request,
        /// The `cursor` of the previous answer.
        since: Query<Option<String>>,
    ) -> Result<FeedResponse, Failure<FeedErrors>> {
        let refuse = |detail| Error::InvalidClient {
            basic: true,
            detail,
        };
        let presented = client_auth::presented(req, None, None)?;
        if !matches!(presented, Presented::Basic { .. }) {
            return Err(refuse("the feed needs HTTP Basic client authentication").into());
        }
        let client = client_auth::authenticate(&state, presented, client::Lookup::Recent).await?;
        if client.is_public {
            return Err(refuse("the feed is for confidential clients").into());
        }
        let since = since.0.and_then(|s| s.parse::<i64>().ok());
        let (entries, cursor) = state.feed.since(since, state.clock.now()).await?;
        let feed = Feed {
            cursor: cursor.to_string(),
            entries: entries
                .into_iter()
                .map(|r| {
                    let (kind, value, not_before) = r.entry.parts();
                    FeedEntry {
                        kind: kind.to_owned(),
                        value: value.to_owned(),
                        not_before,
                        expires_at: r.expires_at.timestamp(),
                    }
                })
                .collect(),
        };
        let body = serde_json::to_vec(&feed).map_err(|e| Error::Internal(e.into()))?;
        let etag = etag::of(&body);
        Ok(if none_match(req.headers(), &etag) {
            FeedResponse::NotModified(etag)
        } else {
            FeedResponse::Ok(PreRendered::new(body.into()), etag)
        })
    }
}
