//! `application/x-www-form-urlencoded` bodies read the way RFC 6749 asks: a repeated parameter or one
//! that is not valid UTF-8 is `invalid_request`, rather than silently last-wins or lossily decoded as
//! poem-openapi's `Form` would.

use std::collections::HashSet;

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;

use crate::error::Error;

pub struct StrictForm<T>(pub T);

impl<T: Type> Payload for StrictForm<T> {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    fn check_content_type(content_type: &str) -> bool {
        content_type
            .parse::<mime::Mime>()
            .is_ok_and(|m| m.type_() == "application" && m.subtype() == "x-www-form-urlencoded")
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: DeserializeOwned + Send> ParsePayload for StrictForm<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(req: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(req, body).await?;
        serde_urlencoded::from_bytes(&checked(&data)?)
            .map(Self)
            .map_err(|_| Error::invalid_request("malformed form body").into())
    }
}

impl_apirequest_for_payload!(StrictForm<T>, T: DeserializeOwned + Type + Send);

/// RFC 6749 §3.1/§3.2: parameters must not be repeated, and every name and value must decode to UTF-8.
/// Returns the body without the parameters sent with no value, which §3.1 says to treat as omitted.
fn checked(body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&[u8]> = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, |&b| b == b'=');
        let name = decode(parts.next().unwrap_or_default())
            .ok_or_else(|| Error::invalid_request("a parameter name is not valid UTF-8"))?;
        let value = parts.next().unwrap_or_default();
        if decode(value).is_none() {
            return Err(Error::invalid_request(format!(
                "parameter `{}` is not valid UTF-8",
                printable(&name)
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(Error::invalid_request(format!(
                "parameter `{}` is repeated",
                printable(&name)
            )));
        }
        if !value.is_empty() {
            kept.push(pair);
        }
    }
    Ok(kept.join(&b'&'))
}

fn decode(raw: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).ok()
}

/// A parameter name as it may be echoed back: short and plain.
fn printable(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_non_utf8_parameters_are_refused() {
        assert!(checked(b"grant_type=password&username=a%20b&password=x+y").is_ok());
        assert!(checked(b"").is_ok());
        let repeated = checked(b"scope=a&scope=b").unwrap_err().to_string();
        assert!(
            repeated.contains("scope") && repeated.contains("repeated"),
            "{repeated}"
        );
        assert!(checked(b"password=%FF%FE").is_err());
        assert!(checked(b"pass%C3word=x").is_err());
        // A name repeated under another spelling is still repeated.
        assert!(checked(b"scope=a&sc%6Fpe=b").is_err());
        // Even when one of them is empty.
        assert!(checked(b"scope=&scope=b").is_err());
    }

    #[test]
    fn parameters_without_a_value_are_dropped_as_omitted() {
        assert_eq!(
            checked(b"grant_type=password&scope=&client_id&username=a").unwrap(),
            b"grant_type=password&username=a"
        );
        assert_eq!(checked(b"scope=").unwrap(), b"");
    }
}
