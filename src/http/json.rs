//! JSON request bodies, read strictly: a string holding text the database cannot store (a NUL, which
//! JSON can carry as `\u0000`) is `invalid_request` whatever the field, before any handler sees it, and
//! a value of the wrong type is refused rather than turned into a string as poem-openapi's `Json` would
//! (a number sent as a password would become its decimal rendering, `1e19` for `10000000000000000000`).

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{Json, ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::form::storable;
use crate::error::Error;

pub struct StrictJson<T>(pub T);

impl<T: Type> Payload for StrictJson<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        Json::<T>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: DeserializeOwned + Send> ParsePayload for StrictJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(req: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(req, body).await?;
        // serde_json also refuses what is not UTF-8 text, a lone surrogate (`"\ud800"`) included.
        let value: Value = serde_json::from_slice(&data)
            .map_err(|_| Error::invalid_request("malformed request body"))?;
        if !all_storable(&value) {
            return Err(Error::invalid_request("the body holds a NUL character").into());
        }
        let parsed = serde_json::from_value(value)
            .map_err(|_| Error::invalid_request("malformed request body"))?;
        Ok(Self(parsed))
    }
}

impl_apirequest_for_payload!(StrictJson<T>, T: DeserializeOwned + Type + Send);

/// Whether every string in the document, names included, is [`storable`].
fn all_storable(value: &Value) -> bool {
    match value {
        Value::String(s) => storable(s),
        Value::Array(items) => items.iter().all(all_storable),
        Value::Object(fields) => fields
            .iter()
            .all(|(name, value)| storable(name) && all_storable(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nul_in_any_string_or_name_is_found() {
        assert!(all_storable(
            &json!({"username": "alice", "tags": ["a", 1, null], "n": {"x": true}})
        ));
        for bad in [
            json!({"username": "ali\u{0}ce"}),
            json!({"user\u{0}name": "alice"}),
            json!({"a": [["\u{0}"]]}),
            json!("\u{0}"),
        ] {
            assert!(!all_storable(&bad), "{bad}");
        }
    }
}
