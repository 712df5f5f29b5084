//! Operational endpoints.

use poem_openapi::{Object, OpenApi, payload::Json};

use super::Tag;

#[derive(Object)]
struct Health {
    /// `ok`.
    status: String,
}

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
}
