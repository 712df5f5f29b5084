//! Operational endpoints: liveness and readiness.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use poem::{IntoResponse, Response, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, Payload},
    registry::MetaSchemaRef,
    types::Type,
};

use super::Tag;
use crate::state::AppState;

#[derive(Object)]
struct Health {
    /// `ok`.
    status: String,
}

/// Each dependency and whether it answers.
#[derive(Object)]
struct Readiness {
    /// `ok`, or `unavailable` when any dependency is down.
    status: String,
    /// `database`, `redis` and `keys`: `ok`, `down`, or (Redis) `not configured`.
    checks: BTreeMap<String, String>,
}

#[derive(ApiResponse)]
enum Ready {
    /// Every dependency answers.
    #[oai(status = 200)]
    Ok(Json<Readiness>),
    /// A dependency does not answer; `checks` names it.
    #[oai(status = 503)]
    Unavailable(Json<Readiness>),
}

#[derive(ApiResponse)]
enum MetricsText {
    /// The exposition.
    #[oai(status = 200)]
    Ok(OpenMetrics),
}

/// The OpenMetrics text exposition, documented under the media type it is served with (Prometheus asks
/// for it first and accepts it).
struct OpenMetrics(String);

impl Payload for OpenMetrics {
    const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }
}

impl IntoResponse for OpenMetrics {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

/// A dependency that takes longer than this to answer is down, as far as readiness goes.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct OpsApi;

#[OpenApi]
impl OpsApi {
    /// Liveness
    ///
    /// Answers as long as the process serves requests; touches no dependency.
    #[oai(path = "/healthz", method = "get", tag = "Tag::Operations")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Prometheus metrics
    ///
    /// OpenMetrics text: requests, latency, tokens issued, reuse detections, revocations, rate-limit and
    /// throttle rejections, the hashing queue, deny-list lookups, Redis errors, key-set changes.
    #[oai(path = "/metrics", method = "get", tag = "Tag::Operations")]
    async fn metrics(&self, state: Data<&Arc<AppState>>) -> MetricsText {
        MetricsText::Ok(OpenMetrics(state.metrics.render()))
    }

    /// Readiness
    ///
    /// `200` when the database and Redis (if configured) answer and a signing key is loaded, else
    /// `503` naming what does not.
    #[oai(path = "/readyz", method = "get", tag = "Tag::Operations")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> Ready {
        let up = |ok: bool| if ok { "ok" } else { "down" }.to_owned();
        let database = tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await;
        let mut checks = BTreeMap::from([
            ("database".to_owned(), up(matches!(database, Ok(Ok(()))))),
            // The key store always holds a signing key once started; a failed rescan keeps the last set.
            (
                "keys".to_owned(),
                up(!state.keys.current().keys().is_empty()),
            ),
        ]);
        let redis = if state.deny_list.is_redis() {
            up(state.deny_list.ping().await.is_ok())
        } else {
            "not configured".to_owned()
        };
        checks.insert("redis".to_owned(), redis);
        if checks.values().any(|v| v == "down") {
            tracing::warn!(?checks, "not ready");
            Ready::Unavailable(Json(Readiness {
                status: "unavailable".into(),
                checks,
            }))
        } else {
            Ready::Ok(Json(Readiness {
                status: "ok".into(),
                checks,
            }))
        }
    }
}
