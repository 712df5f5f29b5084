//! Errors as HTTP answers: the status, the challenge and the `{"error","error_description"}` body of
//! every [`Error`] (RFC 6749 §5.2 at the token endpoint, RFC 6750 §3 on Bearer routes, the same envelope
//! everywhere else), and the sets of them each operation documents.

use std::{borrow::Cow, marker::PhantomData};

use poem::{
    Response,
    http::{HeaderValue, StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};

use crate::error::Error;

/// The body of every error response.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A machine-readable code: an RFC 6749/6750 code where one applies.
    pub error: String,
    /// A short human-readable explanation.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// The status of the answer.
pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidClient { .. } | Error::InvalidToken(_) | Error::MissingToken => {
            StatusCode::UNAUTHORIZED
        }
        Error::InsufficientScope | Error::RegistrationDisabled => StatusCode::FORBIDDEN,
        Error::NotFound => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Policy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The public description: fixed per kind, or built from values the client itself sent.
pub(super) fn description(e: &Error) -> Option<Cow<'static, str>> {
    let fixed = |s: &'static str| Some(Cow::Borrowed(s));
    match e {
        Error::InvalidRequest(d) => Some(d.clone()),
        Error::InvalidClient { .. } => fixed("client authentication failed"),
        Error::InvalidGrant(_) => fixed("the provided authorization grant is invalid"),
        Error::UnauthorizedClient => fixed("this client may not use this grant type"),
        Error::UnsupportedGrantType => fixed("unsupported grant_type"),
        Error::InvalidScope => fixed("the requested scope is invalid or not allowed"),
        Error::InvalidToken(_) => fixed("the access token is invalid"),
        Error::InvalidLinkToken(_) => {
            fixed("the link is invalid, expired or used; ask for a new one")
        }
        Error::EmailNotVerified => fixed(
            "the email address is not verified: open the link sent to it, or reset the password, which proves it too",
        ),
        Error::MissingToken => fixed("a bearer access token is required"),
        Error::InsufficientScope => fixed("the access token lacks the scope this needs"),
        Error::NotFound => fixed("no such resource"),
        Error::Conflict(_) => fixed("that value is already taken"),
        Error::Policy { description, .. } => Some(description.clone()),
        Error::InvalidCurrentPassword => fixed("current_password is not the user's password"),
        Error::RegistrationDisabled => fixed("registration is switched off"),
        Error::PayloadTooLarge => fixed("the request body is larger than 64 KiB"),
        Error::RequestTimeout => fixed("the request body took too long to arrive"),
        Error::RateLimited { .. } => fixed("too many requests; retry later"),
        Error::Unavailable { what, .. } => Some(Cow::Owned(format!("{what} is unavailable"))),
        Error::Internal(_) => fixed("internal error"),
    }
}

fn challenge(e: &Error) -> Option<&'static str> {
    match e {
        Error::InvalidClient { basic: true, .. } => Some(r#"Basic realm="portcullis""#),
        Error::InvalidToken(_) => Some(r#"Bearer error="invalid_token""#),
        Error::MissingToken => Some("Bearer"),
        Error::InsufficientScope => Some(r#"Bearer error="insufficient_scope""#),
        _ => None,
    }
}

impl poem::error::ResponseError for Error {
    fn status(&self) -> StatusCode {
        status(self)
    }

    fn as_response(&self) -> Response {
        match self {
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            other => tracing::debug!(error = %other, "request refused"),
        }
        let body = ErrorBody {
            error: self.code().to_owned(),
            error_description: description(self).map(Cow::into_owned),
        };
        let mut resp = Response::builder()
            .status(status(self))
            .content_type("application/json")
            .body(serde_json::to_vec(&body).expect("an error body serialises"));
        let headers = resp.headers_mut();
        if let Some(challenge) = challenge(self) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        // RFC 9110 §15.5.9: the rest of the body may never come, so the connection cannot be reused.
        if let Self::RequestTimeout = self {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The error responses one group of operations can give, for the OpenAPI document.
pub trait ErrorSet: Send + Sync + 'static {
    const RESPONSES: &'static [(u16, &'static str)];
}

macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $what:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        pub enum $name {}
        impl ErrorSet for $name {
            const RESPONSES: &'static [(u16, &'static str)] = &[$(($status, $what)),+];
        }
    )+};
}

error_sets! {
    /// `/oauth/token`.
    TokenErrors {
        400 => "RFC 6749 §5.2: invalid_request, invalid_grant, unauthorized_client, unsupported_grant_type, invalid_scope",
        401 => "invalid_client, with `WWW-Authenticate: Basic` when HTTP Basic was used",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        429 => "rate_limited, with `Retry-After` in seconds",
        503 => "temporarily_unavailable (the password-hashing pool is saturated), with `Retry-After`",
    }
    /// Routes that take a Bearer access token.
    BearerErrors {
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// Bearer routes with query parameters.
    BearerQueryErrors {
        400 => "invalid_request: a malformed parameter",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// `POST /oauth/revoke` and `POST /oauth/introspect`.
    ClientEndpointErrors {
        400 => "invalid_request: a missing, repeated or malformed parameter",
        401 => "invalid_client (introspection also refuses public clients), with `WWW-Authenticate: Basic` when HTTP Basic was used",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        503 => "the deny list (Redis) cannot be read or written now",
    }
    /// `GET /oauth/revocations`.
    FeedErrors {
        401 => "invalid_client: HTTP Basic authentication of a confidential client is required",
    }
    /// Bearer routes that name one resource.
    BearerItemErrors {
        400 => "invalid_request: the id is not a UUID",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        404 => "no such resource (or not yours)",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// `POST /users/me/password`.
    PasswordChangeErrors {
        400 => "invalid_request (a malformed body) or invalid_current_password",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        422 => "the new password breaks a rule; `error` names it",
        429 => "rate_limited: too many password attempts; `Retry-After` says when to try again",
        503 => "the deny list or the hashing pool is unavailable",
    }
    /// `POST /users`.
    RegisterErrors {
        400 => "invalid_request: a malformed body",
        403 => "registration_disabled",
        409 => "username_taken or email_taken",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        422 => "a username or password rule failed; `error` names the rule",
        429 => "rate_limited, with `Retry-After` in seconds",
        503 => "temporarily_unavailable (the password-hashing pool is saturated), with `Retry-After`",
    }
    /// `POST /users/password-reset`.
    ResetRequestErrors {
        400 => "invalid_request: a malformed body, or neither email nor username",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        429 => "rate_limited: too many requests from this address, with `Retry-After` in seconds",
    }
    /// `POST /users/password-reset/confirm` and `POST /users/email-verification/confirm`.
    LinkConfirmErrors {
        400 => "invalid_token: the link's token is unknown, expired, used or for the other purpose; or invalid_request",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        413 => "the body is larger than 64 KiB",
        422 => "the new password breaks a rule; `error` names it (the token stays usable)",
        503 => "the deny list or the hashing pool is unavailable",
    }
    /// `POST /users/me/email-verification`.
    VerificationErrors {
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        409 => "email_already_verified",
        422 => "no_email: the user has no address to verify",
        429 => "rate_limited: too many requests from this address, with `Retry-After` in seconds",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
    /// `PATCH /users/me`.
    EmailChangeErrors {
        400 => "invalid_request: a malformed body",
        401 => "RFC 6750 invalid_token, with `WWW-Authenticate: Bearer`",
        403 => "RFC 6750 insufficient_scope",
        408 => "the body did not arrive within `server.read_timeout`; the connection is closed",
        409 => "email_taken",
        413 => "the body is larger than 64 KiB",
        422 => "invalid_email: the address is missing, null or not valid",
        503 => "the deny list cannot be read, so the token cannot be checked",
    }
}

/// An [`Error`] as the response of an operation whose possible failures are the set `S`.
pub struct Failure<S>(pub Error, PhantomData<S>);

impl<S> From<Error> for Failure<S> {
    fn from(e: Error) -> Self {
        Self(e, PhantomData)
    }
}

impl<S> From<Failure<S>> for poem::Error {
    fn from(f: Failure<S>) -> Self {
        poem::Error::from(f.0)
    }
}

impl<S> poem::IntoResponse for Failure<S>
where
    S: Send,
{
    fn into_response(self) -> Response {
        poem::error::ResponseError::as_response(&self.0)
    }
}

impl<S: ErrorSet + Send> ApiResponse for Failure<S> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: S::RESPONSES
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use poem::error::ResponseError;

    use super::*;

    async fn answer(e: Error) -> (StatusCode, poem::http::HeaderMap, serde_json::Value) {
        let resp = e.as_response();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().into_bytes().await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn each_error_has_its_status_code_and_challenge() {
        let cases = [
            (Error::invalid_request("x"), 400, "invalid_request", None),
            (
                Error::InvalidGrant("unknown user"),
                400,
                "invalid_grant",
                None,
            ),
            (Error::UnauthorizedClient, 400, "unauthorized_client", None),
            (
                Error::UnsupportedGrantType,
                400,
                "unsupported_grant_type",
                None,
            ),
            (Error::InvalidScope, 400, "invalid_scope", None),
            (
                Error::InvalidCurrentPassword,
                400,
                "invalid_current_password",
                None,
            ),
            (
                Error::InvalidClient {
                    basic: true,
                    detail: "wrong secret",
                },
                401,
                "invalid_client",
                Some(r#"Basic realm="portcullis""#),
            ),
            (
                Error::InvalidClient {
                    basic: false,
                    detail: "wrong secret",
                },
                401,
                "invalid_client",
                None,
            ),
            (
                Error::InvalidToken("expired"),
                401,
                "invalid_token",
                Some(r#"Bearer error="invalid_token""#),
            ),
            (Error::MissingToken, 401, "invalid_token", Some("Bearer")),
            (
                Error::InsufficientScope,
                403,
                "insufficient_scope",
                Some(r#"Bearer error="insufficient_scope""#),
            ),
            (
                Error::RegistrationDisabled,
                403,
                "registration_disabled",
                None,
            ),
            (Error::NotFound, 404, "not_found", None),
            (
                Error::Conflict("username_taken"),
                409,
                "username_taken",
                None,
            ),
            (
                Error::Policy {
                    code: "password_too_short",
                    description: "short".into(),
                },
                422,
                "password_too_short",
                None,
            ),
            (Error::PayloadTooLarge, 413, "invalid_request", None),
            (Error::RequestTimeout, 408, "invalid_request", None),
            (
                Error::RateLimited { retry_after: 7 },
                429,
                "rate_limited",
                None,
            ),
            (
                Error::Unavailable {
                    what: "the deny list",
                    retry_after: 1,
                },
                503,
                "temporarily_unavailable",
                None,
            ),
            (
                Error::Internal(anyhow::anyhow!("disk on fire")),
                500,
                "server_error",
                None,
            ),
        ];
        for (error, want_status, want_code, want_challenge) in cases {
            let name = format!("{error:?}");
            let (status, headers, body) = answer(error).await;
            assert_eq!(status.as_u16(), want_status, "{name}");
            assert_eq!(body["error"], want_code, "{name}");
            assert_eq!(
                headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
                want_challenge,
                "{name}"
            );
            assert_eq!(headers["content-type"], "application/json", "{name}");
        }
    }

    #[tokio::test]
    async fn what_a_client_must_not_learn_stays_out_of_the_answer() {
        for (error, secret) in [
            (Error::InvalidGrant("unknown user"), "unknown user"),
            (
                Error::InvalidToken("key not published"),
                "key not published",
            ),
            (
                Error::Internal(anyhow::anyhow!("password=hunter2")),
                "hunter2",
            ),
            (
                Error::InvalidClient {
                    basic: false,
                    detail: "wrong secret",
                },
                "wrong secret",
            ),
        ] {
            let (_, _, body) = answer(error).await;
            assert!(!body.to_string().contains(secret), "{body}");
        }
    }

    #[tokio::test]
    async fn waits_are_said_in_retry_after_and_a_late_body_closes_the_connection() {
        let (_, headers, _) = answer(Error::RateLimited { retry_after: 7 }).await;
        assert_eq!(headers["retry-after"], "7");
        let (_, headers, _) = answer(Error::Unavailable {
            what: "x",
            retry_after: 2,
        })
        .await;
        assert_eq!(headers["retry-after"], "2");
        let (_, headers, _) = answer(Error::RequestTimeout).await;
        assert_eq!(headers["connection"], "close");
        let (_, headers, _) = answer(Error::InvalidScope).await;
        assert!(headers.get("retry-after").is_none() && headers.get("connection").is_none());
    }
}
