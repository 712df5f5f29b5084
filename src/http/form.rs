//! `application/x-www-form-urlencoded` bodies read the way RFC 6749 asks: a repeated parameter or one
//! that is not valid UTF-8 is `invalid_request`, rather than silently last-wins or lossily decoded as
//! poem-openapi's `Form` would; so is one holding text the database cannot store.
//!
//! The body is decoded once, here, and the form struct deserialised from the decoded parameters, rather
//! than decoded again (and lossily) by `serde_urlencoded`.

use std::{borrow::Cow, collections::HashSet};

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::{
    self, DeserializeOwned, IntoDeserializer, Visitor,
    value::{Error as DeError, MapDeserializer},
};

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
        Ok(Self(read(&data)?))
    }
}

/// The form struct `T` from a body's parameters.
fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let parameters = parameters(body)?
        .into_iter()
        .map(|(name, value)| (name, Text(value)));
    T::deserialize(MapDeserializer::<_, DeError>::new(parameters))
        .map_err(|_| Error::invalid_request("malformed form body"))
}

impl_apirequest_for_payload!(StrictForm<T>, T: DeserializeOwned + Type + Send);

/// A decoded name and its value, borrowed from the body when there was nothing to decode.
type Parameter<'a> = (Cow<'a, str>, Cow<'a, str>);

/// RFC 6749 §3.1/§3.2: parameters must not be repeated, and every name and value must decode to UTF-8.
/// Returns the parameters sent with a value, decoded; one sent with no value is treated as omitted (§3.1).
fn parameters(body: &[u8]) -> Result<Vec<Parameter<'_>>, Error> {
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = split(pair);
        let name = decode(name)
            .ok_or_else(|| Error::invalid_request("a parameter name is not valid UTF-8"))?;
        let Some(value) = decode(value) else {
            return Err(Error::invalid_request(format!(
                "parameter `{}` is not valid UTF-8",
                printable(&name)
            )));
        };
        if !storable(&name) || !storable(&value) {
            return Err(Error::invalid_request(format!(
                "parameter `{}` holds a NUL character",
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
            kept.push((name, value));
        }
    }
    Ok(kept)
}

/// Whether PostgreSQL can store the text: it refuses a NUL, and the request that carried one must be
/// refused at the edge rather than fail at the database.
pub(super) fn storable(text: &str) -> bool {
    memchr::memchr(0, text.as_bytes()).is_none()
}

/// A decoded value, as the form struct's `Option<String>` fields take it.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserializer<'de> for Text<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Cow::Borrowed(text) => visitor.visit_str(text),
            Cow::Owned(text) => visitor.visit_string(text),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, DeError> for Text<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A `name=value` pair's two halves, still encoded; the value is empty when there is no `=`.
fn split(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[]),
    }
}

/// Decodes a name or value; it is borrowed from the body unless it has something to decode, as most do.
fn decode(raw: &[u8]) -> Option<Cow<'_, str>> {
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).ok().map(Cow::Owned)
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
    use serde::Deserialize;

    use super::*;

    fn names(body: &[u8]) -> Vec<String> {
        parameters(body)
            .unwrap()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect()
    }

    #[test]
    fn repeated_and_non_utf8_parameters_are_refused() {
        assert_eq!(
            names(b"grant_type=password&username=a%20b&password=x+y"),
            ["grant_type=password", "username=a b", "password=x y"]
        );
        assert!(parameters(b"").unwrap().is_empty());
        let repeated = parameters(b"scope=a&scope=b").unwrap_err().to_string();
        assert!(
            repeated.contains("scope") && repeated.contains("repeated"),
            "{repeated}"
        );
        assert!(parameters(b"password=%FF%FE").is_err());
        assert!(parameters(b"pass%C3word=x").is_err());
        // A name repeated under another spelling is still repeated.
        assert!(parameters(b"scope=a&sc%6Fpe=b").is_err());
        // Even when one of them is empty.
        assert!(parameters(b"scope=&scope=b").is_err());
    }

    #[test]
    fn a_nul_anywhere_is_refused() {
        for body in [
            &b"username=a%00b"[..],
            b"user%00name=ab",
            b"username=ab%00",
            b"a=%00",
        ] {
            let refused = parameters(body).unwrap_err().to_string();
            assert!(refused.contains("NUL"), "{body:?}: {refused}");
        }
    }

    #[test]
    fn parameters_without_a_value_are_dropped_as_omitted() {
        assert_eq!(
            names(b"grant_type=password&scope=&client_id&username=a"),
            ["grant_type=password", "username=a"]
        );
        assert!(parameters(b"scope=").unwrap().is_empty());
        // A value that ends in `=` is a value, encoded or not.
        assert_eq!(names(b"a=b%3D&c=&d=e=&&"), ["a=b=", "d=e="]);
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Sample {
        grant_type: Option<String>,
        scope: Option<String>,
    }

    #[test]
    fn the_form_struct_takes_the_decoded_values_and_ignores_unknown_ones() {
        assert_eq!(
            read::<Sample>(b"grant_type=refresh_token&scope=a+b%20c&extension=1").unwrap(),
            Sample {
                grant_type: Some("refresh_token".into()),
                scope: Some("a b c".into())
            }
        );
        assert!(read::<Sample>(b"scope=a&scope=b").is_err());
        assert_eq!(
            read::<Sample>(b"scope=").unwrap(),
            Sample {
                grant_type: None,
                scope: None
            }
        );
    }
}
